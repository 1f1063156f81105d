"""Where a run's images come from: a folder the user names (which must exist, and wins), or a
shipped dataset by name, written to the cache, never into a path the user typed."""

import os

import pytest

from embedding_net.cache import CACHE_VARIABLE, cache_dir, dataset_dir
from embedding_net.config import load_config
from embedding_net.config.checks import check_data_paths, check_paths
from embedding_net.errors import ConfigError, DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT = os.path.join(ROOT, "configs", "omniglot.yml")


def test_the_cache_follows_the_variable_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "mine"))
    assert cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv(CACHE_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dataset_dir("omniglot") == str(tmp_path / "xdg" / "embedding_net" / "datasets" / "omniglot")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == str(tmp_path / "home" / ".cache" / "embedding_net")


def test_the_default_config_reads_omniglot_from_the_cache():
    config = load_config(DEFAULT)
    assert config.data.root is None and config.data.dataset == "omniglot"
    assert config.data.folder == dataset_dir("omniglot") == os.path.join(cache_dir(), "datasets", "omniglot")


def test_a_named_folder_wins_over_the_shipped_dataset(tmp_path):
    config = load_config(DEFAULT, [f"data.root={tmp_path}"])
    assert config.data.root == str(tmp_path) and config.data.dataset is None
    assert config.data.folder == str(tmp_path)


@pytest.mark.parametrize("overrides, message", [
    (["data.dataset=null"], "data.root must name the folder of your images (train/<class>/<image>), or "
                            "data.dataset a shipped dataset such as omniglot; received neither"),
    (["data.root={tmp}/nowhere"], "data.root folder not found: {tmp}/nowhere"),
    (["data.root={tmp}"], "data.root {tmp} has no train/ folder: it must hold train/<class>/<image> "
                          "(and optionally val/<class>/<image>)"),
    (["data.root={tmp}", "data.csv={tmp}/labels.csv"], "data.csv file not found: {tmp}/labels.csv"),
    (["model.weights={tmp}/gone.keras"], "model.weights file not found: {tmp}/gone.keras"),
])
def test_missing_paths_fail_with_one_line_naming_the_key(tmp_path, overrides, message):
    config = load_config(DEFAULT, [o.format(tmp=tmp_path) for o in overrides])
    with pytest.raises((ConfigError, DatasetError)) as info:
        check_paths(config)
    assert str(info.value) == message.format(tmp=tmp_path)
    assert not os.path.exists(tmp_path / "nowhere")


def test_a_folder_with_a_train_split_passes(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    check_data_paths(load_config(DEFAULT, [f"data.root={tmp_path}"]).data)


def test_a_shipped_dataset_is_materialised_in_the_cache(monkeypatch, tmp_path):
    from embedding_net.data.datasets import registry
    from embedding_net.registry import Entry
    from embedding_net.training.data import prepare_dataset

    written = []
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setitem(registry._DATASETS._entries, "omniglot",
                        Entry("omniglot", lambda root: written.append(root) or root, (), {}))
    assert prepare_dataset(load_config(DEFAULT).data) == str(tmp_path / "cache" / "datasets" / "omniglot")
    assert written == [str(tmp_path / "cache" / "datasets" / "omniglot")]
