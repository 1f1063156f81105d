"""The commands: `embedding-net train|test` (the console entry point), --help, --list,
--print-config, --data DIR's choices, and the refusal to overwrite a finished run."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import yaml

from embedding_net.cli import main as embedding_net
from embedding_net.cli.configs import list_configs, resolve_config_path
from embedding_net.cli.listing import LISTS, names_of
from embedding_net.config import config_from_dict, config_to_dict, load_config, save_config
from embedding_net.config.checks import check_run_folder
from embedding_net.config.folder_choices import choose_for_folder
from embedding_net.config.sections import Config
from embedding_net.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def entry_point(*args, env=None):
    """`embedding-net ARGS` as pip installed it beside this Python."""
    script = os.path.join(os.path.dirname(sys.executable), "embedding-net")
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **(env or {})))


def test_the_entry_point_is_installed_and_names_its_commands():
    result = entry_point("--help")
    assert result.returncode == 0, result.stderr
    assert "train" in result.stdout and "test" in result.stdout
    assert entry_point("fly").returncode == 2


def test_train_help_lists_every_section_and_key_and_points_to_the_key_table(capsys):
    import dataclasses

    with pytest.raises(SystemExit) as info:
        embedding_net(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert 'README.md, "Config"' in text and "--print-config" in text and "--data DIR" in text
    for section in dataclasses.fields(Config):
        assert f"{section.name}:" in text
        for key in dataclasses.fields(section.type):
            assert key.name in text


@pytest.mark.parametrize("what", sorted(LISTS))
def test_every_list_prints_its_registry(what, capsys):
    assert embedding_net(["train", "--list", what]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == names_of(what) and printed


def test_lists_are_the_registries():
    from embedding_net.losses.registry import list_losses
    from embedding_net.models.backbones import list_backbones

    assert names_of("backbones") == list_backbones()
    assert {line.split()[0] for line in names_of("losses")} == set(list_losses())
    assert "omniglot" in names_of("configs") and "folder" in names_of("configs")


def test_a_shipped_config_is_found_by_name_and_a_missing_one_is_named():
    assert resolve_config_path("omniglot_supcon") == resolve_config_path("omniglot_supcon.yml")
    assert os.path.samefile(resolve_config_path("omniglot"), os.path.join(ROOT, "configs", "omniglot.yml"))
    with pytest.raises(ConfigError, match="config file not found: nope \\(shipped configs: folder, omniglot"):
        resolve_config_path("nope")
    assert set(list_configs()) == {n[:-4] for n in os.listdir(os.path.join(ROOT, "configs")) if n.endswith(".yml")}


def test_print_config_shows_the_resolved_config_and_writes_nothing(tmp_path, capsys):
    assert embedding_net(["train", "--data", "omniglot", "--set", f"output.work_dir={tmp_path / 'runs'}",
                          "--set", "train.epochs=3", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    config = config_from_dict(printed)
    assert config.data.dataset == "omniglot" and config.data.root is None and config.train.epochs == 3
    assert printed == config_to_dict(load_config(os.path.join(ROOT, "configs", "omniglot.yml"),
                                                 [f"output.work_dir={tmp_path / 'runs'}", "train.epochs=3"]))
    assert os.listdir(tmp_path) == []


def _folder(root, classes, per_class, shape, val=False, seed=0):
    rng = np.random.default_rng(seed)
    for split in ("train", "val") if val else ("train",):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for index in range(per_class(label)):
                cv2.imwrite(str(folder / f"{index}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
    return str(root)


def test_data_choices_colour_size_batch_and_hold_out(tmp_path):
    root = _folder(tmp_path / "shop", classes=40, per_class=lambda label: 3 if label < 30 else 6, shape=(50, 70, 3))
    choices = choose_for_folder(root)
    assert choices.values["model.input_shape"] == [48, 48, 3]  # the largest side <= the median shorter side
    assert choices.values["data.images_per_class"] == 3         # the median class has 3 images
    assert choices.values["data.classes_per_batch"] == 40       # 128 // 3 = 42, at most the 40 classes
    assert choices.values["data.val_ratio"] == 0.2 and choices.values["output.name"] == "shop"
    assert choices.values["data.root"] == root and choices.values["data.dataset"] is None
    assert any("20% of each class held out" in line for line in choices.lines)


def test_data_choices_grayscale_small_images_and_a_val_folder(tmp_path):
    root = _folder(tmp_path / "marks", classes=5, per_class=lambda label: 8, shape=(20, 24), val=True)
    choices = choose_for_folder(root)
    assert choices.values["model.input_shape"] == [28, 28, 1]  # never below 28 px
    assert choices.values["data.images_per_class"] == 4 and choices.values["data.classes_per_batch"] == 5
    assert choices.values["data.val_ratio"] is None
    assert any(line.strip() == f"val: {root}/val" for line in choices.lines)


def test_set_overrides_what_data_chose(tmp_path, capsys):
    root = _folder(tmp_path / "shop", classes=6, per_class=lambda label: 5, shape=(40, 40, 3))
    assert embedding_net(["train", "--data", root, "--set", "model.input_shape=[32, 32, 3]",
                          "--set", f"output.work_dir={tmp_path / 'runs'}", "--print-config"]) == 0
    config = config_from_dict(yaml.safe_load(capsys.readouterr().out))
    assert config.model.input_shape == (32, 32, 3) and config.data.root == root
    assert config.data.classes_per_batch == 6 and config.output.name == "shop"


def test_a_finished_run_of_another_config_is_never_overwritten(tmp_path):
    config = load_config(os.path.join(ROOT, "configs", "omniglot.yml"), [f"output.work_dir={tmp_path}"])
    os.makedirs(config.run_dir)
    save_config(config, os.path.join(config.run_dir, "config.yml"))
    check_run_folder(config)  # not finished yet: an interrupted run resumes
    with open(os.path.join(config.run_dir, "metrics.json"), "w") as handle:
        handle.write("{}")
    check_run_folder(config)  # the same config again: allowed
    check_run_folder(load_config(os.path.join(ROOT, "configs", "omniglot.yml"),
                                 [f"output.work_dir={tmp_path}", "train.verbose=0", "train.mixed_precision=auto"]))
    other = load_config(os.path.join(ROOT, "configs", "omniglot.yml"), [f"output.work_dir={tmp_path}", "train.epochs=3"])
    with pytest.raises(ConfigError, match="holds a finished run made with another config; set output.name"):
        check_run_folder(other)
    os.remove(os.path.join(config.run_dir, "config.yml"))
    with pytest.raises(ConfigError):
        check_run_folder(config)  # a finished run whose config is unknown is not this one


def test_the_script_refuses_before_writing_anything(tmp_path):
    config = load_config(os.path.join(ROOT, "configs", "omniglot.yml"), [f"output.work_dir={tmp_path}"])
    os.makedirs(config.run_dir)
    save_config(config, os.path.join(config.run_dir, "config.yml"))
    with open(os.path.join(config.run_dir, "metrics.json"), "w") as handle:
        handle.write("{}")
    before = sorted(os.listdir(config.run_dir))
    result = entry_point("train", "--set", f"output.work_dir={tmp_path}", "--set", "loss.margin=0.2")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {config.run_dir} holds a finished run made with another config; set output.name to train "
        "this one beside it (or delete the folder to replace it)"]
    assert sorted(os.listdir(config.run_dir)) == before


def test_a_first_run_on_a_new_folder_prints_its_choices_and_plain_warnings(tmp_path):
    root = _folder(tmp_path / "logos", classes=4, per_class=lambda label: 6, shape=(36, 36, 3), val=True)
    (tmp_path / "logos" / "train" / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = entry_point("train", "--data", root, "--set", "train.epochs=1", "--set", "train.steps_per_epoch=2",
                         "--set", "train.validation_steps=1", "--set", "evaluation.plots=false",
                         "--set", "train.export_litert=false", "--set", "train.export_serving=false",
                         "--set", f"output.work_dir={tmp_path / 'runs'}", "--set", "evaluation.episodes=10")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout.splitlines()
    assert out[0] == f"data: {root}: 25 training images in 4 classes (6 to 7 per class)"
    assert "  images: colour, median shorter side 36 px -> model.input_shape [32, 32, 3]" in out
    assert any(line.startswith("training on CPU") for line in out)
    assert f"outputs in {tmp_path / 'runs' / 'logos'}" in out
    warnings = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    assert warnings and all(line.startswith("warning: ") for line in warnings), warnings
    assert any("skipped 1 unreadable image(s)" in line and "broken.png" in line for line in warnings)
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr and "Traceback" not in result.stderr
    assert yaml.safe_load(open(tmp_path / "runs" / "logos" / "config.yml"))["model"]["input_shape"] == [32, 32, 3]


def test_data_counts_only_the_classes_training_keeps_and_one_folder_is_one_run(tmp_path):
    # Ten classes, one of them a single image (no positive pair: training drops it).
    root = _folder(tmp_path / "few", classes=10, per_class=lambda label: 1 if label == 0 else 3, shape=(30, 30, 3))
    choices = choose_for_folder(root + "/")
    assert choices.values["data.classes_per_batch"] == 9 and choices.values["data.images_per_class"] == 3
    assert choices.values["data.root"] == root and choices.values["output.name"] == "few"
    here = os.getcwd()
    try:
        os.chdir(root)
        assert choose_for_folder(".").values["output.name"] == "few"
    finally:
        os.chdir(here)


def test_print_config_shows_even_beside_a_finished_run(tmp_path, capsys):
    config = load_config(os.path.join(ROOT, "configs", "omniglot.yml"), [f"output.work_dir={tmp_path}"])
    os.makedirs(config.run_dir)
    save_config(config, os.path.join(config.run_dir, "config.yml"))
    with open(os.path.join(config.run_dir, "metrics.json"), "w") as handle:
        handle.write("{}")
    assert embedding_net(["train", "--set", f"output.work_dir={tmp_path}", "--set", "train.epochs=40",
                          "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 40
