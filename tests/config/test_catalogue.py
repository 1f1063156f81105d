"""The catalogue file that lets the commands check a config before importing TensorFlow: it
must say what the live registries say, and checking against it must import no TensorFlow."""

import os
import subprocess
import sys

import pytest

from embedding_net.config import load_config
from embedding_net.config.catalogue import build_catalogue, catalogue_registries, load_catalogue
from embedding_net.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(os.path.join(ROOT, "configs", name) for name in os.listdir(os.path.join(ROOT, "configs")))


def test_the_catalogue_is_the_live_registries():
    assert load_catalogue() == build_catalogue(), (
        "a registration changed: run `python -m embedding_net.config.catalogue` and commit catalogue.json")


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_shipped_configs_load_the_same_against_either(path):
    with catalogue_registries():
        checked = load_config(path)
    assert checked == load_config(path)


@pytest.mark.parametrize("override", [
    "model.backbone=resnet19", "loss.name=tripplet", "loss.mining=semihard2", "train.optimizer=adamw2",
    "loss.scale=30", "model.architecture=siamese", "train.lr_schedule=plateau2", "data.augmentation=heavy2",
])
def test_mistakes_give_the_same_line_against_either(override):
    with pytest.raises(ConfigError) as live:
        load_config(os.path.join(ROOT, "configs", "omniglot.yml"), [override])
    with catalogue_registries(), pytest.raises(ConfigError) as catalogued:
        load_config(os.path.join(ROOT, "configs", "omniglot.yml"), [override])
    assert str(catalogued.value) == str(live.value)


CHECK_WITHOUT_TENSORFLOW = """
import sys
from embedding_net.cli import main
status = main(["train", *sys.argv[1:]])
heavy = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
print("imported:", heavy)
sys.exit(status)
"""


@pytest.mark.parametrize("args, status", [
    (["--print-config"], 0),
    (["--set", "model.backbone=resnet19"], 2),
    (["--set", "data.root=/nowhere/at/all"], 2),
    (["--config", os.path.join(ROOT, "tests", "config", "test_catalogue.py")], 2),  # not YAML
])
def test_the_command_checks_the_config_before_importing_tensorflow(args, status, tmp_path):
    result = subprocess.run([sys.executable, "-c", CHECK_WITHOUT_TENSORFLOW, *args,
                             "--set", f"output.work_dir={tmp_path}"], capture_output=True, text=True, timeout=300,
                            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == status, result.stderr
    assert "imported: []" in result.stdout
    assert os.listdir(tmp_path) == []
    if status == 2:
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_invalid_yaml_names_the_line_and_column(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("model:\n  backbone: conv4\n  input_shape: [28, 28, 1\ndata:\n  root: x\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value).startswith(f"{path}, line 4, column 5: not valid YAML: ")
    assert "\n" not in str(info.value)
