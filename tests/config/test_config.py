"""The YAML config: loading, defaults, validation messages, overrides and round trips."""

import dataclasses
import glob
import os
import textwrap

import pytest

from embedding_net.config.sections import (
    Config,
    DataConfig,
    EncodingsConfig,
    LossConfig,
    ModelConfig,
    OutputConfig,
    TrainConfig,
)
from embedding_net.config.loading import config_from_dict, load_config, parse_override, save_config
from embedding_net.errors import ConfigError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.yml")))

VALID_YAML = """\
model:
  backbone: resnet50
  input_shape: [64, 48, 3]
  embedding_size: 128
  weights: imagenet
  pooling: max
data:
  root: /data/faces
  dataset: null
  classes_per_batch: 8
  images_per_class: 3
  cache: none
  cache_max_gb: 2
loss:
  mining: hard
  margin: 0.5
  distance: cosine
train:
  epochs: 7
  steps_per_epoch: 50
  validation_steps: 0
  optimizer: sgd
  learning_rate: 0.01
  lr_schedule: cosine
  warmup_epochs: 2
  restore_best: false
  seed: 42
  verbose: 2
encodings:
  splits: [val]
  max_per_class: 5
  batch_size: 32
output:
  work_dir: runs
  name: faces
"""


def write(tmp_path, text, name="config.yml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_text(tmp_path, text, overrides=()):
    return load_config(write(tmp_path, textwrap.dedent(text)), overrides)


def raises_config_error(*fragments):
    """Context manager: a ConfigError whose one-line message contains every fragment."""

    class _Checker:
        def __enter__(self):
            self._ctx = pytest.raises(ConfigError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            result = self._ctx.__exit__(*exc)
            message = str(self.info.value)
            assert "\n" not in message, message
            for fragment in fragments:
                assert fragment in message, f"{fragment!r} not in {message!r}"
            return result

    return _Checker()


# ----------------------------------------------------------------------------- loading


def test_valid_file_loads_with_typed_values(tmp_path):
    config = load_config(write(tmp_path, VALID_YAML))
    assert isinstance(config, Config)
    assert config.model == ModelConfig(
        backbone="resnet50", input_shape=(64, 48, 3), embedding_size=128, weights="imagenet",
        pooling="max",
    )
    assert isinstance(config.model.input_shape, tuple)
    assert config.data.root == "/data/faces"
    assert config.data.dataset is None
    assert config.data.classes_per_batch == 8 and config.data.images_per_class == 3
    assert config.data.cache == "none"
    assert config.data.cache_max_gb == 2.0 and isinstance(config.data.cache_max_gb, float)
    assert config.loss == LossConfig(name="triplet", mining="hard", margin=0.5, distance="cosine")
    assert config.train == TrainConfig(
        epochs=7, steps_per_epoch=50, validation_steps=0, optimizer="sgd", learning_rate=0.01,
        lr_schedule="cosine", warmup_epochs=2, restore_best=False, seed=42, verbose=2,
    )
    assert config.encodings == EncodingsConfig(splits=("val",), max_per_class=5, batch_size=32)
    assert isinstance(config.encodings.splits, tuple)
    assert config.output == OutputConfig(work_dir="runs", name="faces")
    assert config.run_dir == os.path.join("runs", "faces")


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, VALID_YAML))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.epochs = 3


def test_missing_sections_and_keys_take_defaults(tmp_path):
    config = load_text(tmp_path, """\
        train:
          epochs: 3
    """)
    assert config.train.epochs == 3
    assert config.train.learning_rate == TrainConfig().learning_rate
    for name in ("model", "data", "loss", "encodings", "output"):
        assert getattr(config, name) == getattr(Config(), name)


@pytest.mark.parametrize("text", ["", "# only a comment\n", "model:\n", "model: {}\n"])
def test_empty_file_or_section_gives_defaults(tmp_path, text):
    assert load_config(write(tmp_path, text)) == Config()


def test_no_path_gives_defaults():
    assert load_config() == Config()
    assert load_config(None, ["train.epochs=2"]).train.epochs == 2


# ----------------------------------------------------------------------------- unknown names


def test_unknown_key_names_key_and_lists_valid_keys(tmp_path):
    with raises_config_error("train.epoch", "valid keys") as info:
        load_text(tmp_path, """\
            train:
              epoch: 3
        """)
    message = str(info.value)
    for field in dataclasses.fields(TrainConfig):
        assert field.name in message


def test_unknown_section_names_it_and_lists_sections(tmp_path):
    with raises_config_error("trian", "valid sections") as info:
        load_text(tmp_path, """\
            trian:
              epochs: 3
        """)
    for field in dataclasses.fields(Config):
        assert field.name in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "42\n", "just a string\n"])
def test_top_level_not_a_mapping_fails_naming_the_path(tmp_path, text):
    path = write(tmp_path, text)
    with raises_config_error(path):
        load_config(path)


@pytest.mark.parametrize("text", ["model: [1, 2]\n", "model: 5\n", "model: resnet50\n"])
def test_section_not_a_mapping_fails(tmp_path, text):
    with raises_config_error("model"):
        load_config(write(tmp_path, text))


# ----------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    "section, key, yaml_value, shown",
    [
        ("train", "epochs", "'ten'", "'ten'"),
        ("train", "epochs", "true", "True"),
        ("train", "epochs", "2.5", "2.5"),
        ("train", "seed", "false", "False"),
        ("train", "learning_rate", "fast", "'fast'"),
        ("train", "learning_rate", "true", "True"),
        ("train", "restore_best", "1", "1"),
        ("model", "backbone", "5", "5"),
        ("model", "input_shape", "[28, 28]", "[28, 28]"),
        ("model", "input_shape", "[28, 28, 1, 1]", "[28, 28, 1, 1]"),
        ("model", "input_shape", "28", "28"),
        ("model", "input_shape", "[28, 28, '1']", "'1'"),
        ("model", "input_shape", "[28.0, 28, 1]", "28.0"),
        ("model", "weights", "3", "3"),
        ("encodings", "splits", "val", "'val'"),
        ("encodings", "max_per_class", "'many'", "'many'"),
        ("train", "restore_best", "'no way'", "'no way'"),
    ],
)
def test_wrong_type_names_key_and_value(tmp_path, section, key, yaml_value, shown):
    with raises_config_error(f"{section}.{key}", shown):
        load_config(write(tmp_path, f"{section}:\n  {key}: {yaml_value}\n"))


def test_wrong_type_message_says_what_was_expected(tmp_path):
    with raises_config_error("train.epochs", "integer", "'ten'"):
        load_text(tmp_path, "train:\n  epochs: ten\n")
    with raises_config_error("model.input_shape", "3", "[28, 28]"):
        load_text(tmp_path, "model:\n  input_shape: [28, 28]\n")


def test_int_is_accepted_for_float_and_becomes_float(tmp_path):
    config = load_text(tmp_path, "train:\n  learning_rate: 1\nloss:\n  margin: 0\n")
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.loss.margin == 0.0 and isinstance(config.loss.margin, float)


def test_optional_values_accept_null(tmp_path):
    config = load_text(tmp_path, "model:\n  weights: null\nencodings:\n  max_per_class: null\n")
    assert config.model.weights is None
    assert config.encodings.max_per_class is None


@pytest.mark.parametrize("shape", ["[28, 28, 2]", "[28, 28, 4]"])
def test_input_shape_channels_must_be_1_or_3(tmp_path, shape):
    with raises_config_error("model.input_shape", shape.strip("[]").split(", ")[-1]):
        load_text(tmp_path, f"model:\n  input_shape: {shape}\n")


def test_empty_encodings_splits_fails(tmp_path):
    with raises_config_error("encodings.splits"):
        load_text(tmp_path, "encodings:\n  splits: []\n")


# ----------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    "section, key, yaml_value, shown",
    [
        ("train", "epochs", "0", "0"),
        ("train", "epochs", "-1", "-1"),
        ("train", "steps_per_epoch", "0", "0"),
        ("train", "validation_steps", "-1", "-1"),
        ("train", "learning_rate", "0", "0"),
        ("train", "learning_rate", "-0.001", "-0.001"),
        ("train", "warmup_epochs", "-2", "-2"),
        ("train", "seed", "-5", "-5"),
        ("train", "verbose", "3", "3"),
        ("train", "optimizer", "adagrad", "'adagrad'"),
        ("train", "lr_schedule", "linear", "'linear'"),
        ("loss", "margin", "-0.1", "-0.1"),
        ("loss", "mining", "semi-hard", "'semi-hard'"),
        ("loss", "mining", "easy", "'easy'"),
        ("loss", "distance", "manhattan", "'manhattan'"),
        ("loss", "name", "lifted", "'lifted'"),
        ("model", "embedding_size", "0", "0"),
        ("model", "pooling", "sum", "'sum'"),
        ("model", "backbone", "nope", "'nope'"),
        ("data", "classes_per_batch", "1", "1"),
        ("data", "images_per_class", "1", "1"),
        ("data", "cache", "disk", "'disk'"),
        ("data", "cache_max_gb", "-1", "-1"),
        ("data", "dataset", "mnist", "'mnist'"),
        ("encodings", "max_per_class", "0", "0"),
        ("encodings", "batch_size", "0", "0"),
    ],
)
def test_out_of_range_names_key_and_value(tmp_path, section, key, yaml_value, shown):
    with raises_config_error(f"{section}.{key}", shown):
        load_config(write(tmp_path, f"{section}:\n  {key}: {yaml_value}\n"))


def test_bad_choice_lists_the_choices(tmp_path):
    with raises_config_error("loss.mining", "'easy'", "all", "hard", "semi_hard"):
        load_text(tmp_path, "loss:\n  mining: easy\n")


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("train", "epochs", 1),
        ("train", "validation_steps", 0),
        ("train", "learning_rate", 1e-9),
        ("loss", "margin", 0.0),
        ("data", "cache_max_gb", 0.0),
        ("data", "classes_per_batch", 2),
        ("data", "dataset", "omniglot"),
        ("train", "verbose", 0),
    ],
)
def test_boundary_values_are_accepted(section, key, value):
    config = config_from_dict({section: {key: value}})
    assert getattr(getattr(config, section), key) == value


# ----------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    "text, keys, value",
    [
        ("train.epochs=3", ["train", "epochs"], 3),
        ("model.weights=null", ["model", "weights"], None),
        ("model.weights=imagenet", ["model", "weights"], "imagenet"),
        ("model.input_shape=[32,32,3]", ["model", "input_shape"], [32, 32, 3]),
        ("train.learning_rate=0.5", ["train", "learning_rate"], 0.5),
        ("train.restore_best=true", ["train", "restore_best"], True),
        ("output.name=a=b", ["output", "name"], "a=b"),
        (" train.epochs = 3", ["train", "epochs"], 3),
    ],
)
def test_parse_override(text, keys, value):
    assert parse_override(text) == (keys, value)


def test_overrides_give_typed_values():
    config = load_config(None, [
        "train.epochs=3", "model.weights=null", "model.input_shape=[32,32,3]",
        "loss.margin=1", "data.dataset=omniglot",
    ])
    assert config.train.epochs == 3 and type(config.train.epochs) is int
    assert config.model.weights is None
    assert config.model.input_shape == (32, 32, 3) and isinstance(config.model.input_shape, tuple)
    assert config.loss.margin == 1.0 and isinstance(config.loss.margin, float)
    assert config.data.dataset == "omniglot"


@pytest.mark.parametrize("text", ["epochs=3", "train.epochs", "a.b.c=1", ".epochs=3", "train.=3",
                                  "=3", "", "train.epochs=[1,"])
def test_malformed_override_fails(text):
    with raises_config_error(repr(text) if text != "train.epochs=[1," else "train.epochs"):
        parse_override(text)
    with pytest.raises(ConfigError):
        load_config(None, [text])


def test_override_of_unknown_key_or_section_fails():
    with raises_config_error("train.epoch", "valid keys"):
        load_config(None, ["train.epoch=3"])
    with raises_config_error("trian", "valid sections"):
        load_config(None, ["trian.epochs=3"])


def test_override_value_is_validated():
    with raises_config_error("train.epochs", "0"):
        load_config(None, ["train.epochs=0"])
    with raises_config_error("train.epochs", "'three'"):
        load_config(None, ["train.epochs=three"])


def test_overrides_beat_file_values(tmp_path):
    path = write(tmp_path, VALID_YAML)
    config = load_config(path, ["train.epochs=3", "model.weights=null", "loss.mining=all"])
    assert config.train.epochs == 3
    assert config.model.weights is None
    assert config.loss.mining == "all"
    # Everything not overridden still comes from the file.
    assert config.train.steps_per_epoch == 50
    assert config.model.backbone == "resnet50"


def test_later_override_wins_and_override_fills_empty_section(tmp_path):
    path = write(tmp_path, "train:\nmodel: {}\n")
    config = load_config(path, ["train.epochs=3", "train.epochs=4", "model.embedding_size=8"])
    assert config.train.epochs == 4
    assert config.model.embedding_size == 8


def test_override_into_non_mapping_section_fails(tmp_path):
    with raises_config_error("train"):
        load_config(write(tmp_path, "train: 5\n"), ["train.epochs=3"])


def test_file_is_not_modified_by_overrides(tmp_path):
    path = write(tmp_path, VALID_YAML)
    load_config(path, ["train.epochs=3"])
    assert (tmp_path / "config.yml").read_text(encoding="utf-8") == VALID_YAML


# ----------------------------------------------------------------------------- file errors


def test_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nope" / "missing.yml")
    with raises_config_error(path):
        load_config(path)


@pytest.mark.parametrize("text", ["model: [1, 2\n", "train:\n  epochs: 3\n bad indent: 1\n",
                                  "a: b: c\n", "\tmodel: {}\n"])
def test_invalid_yaml_names_the_path(tmp_path, text):
    path = write(tmp_path, text)
    with raises_config_error(path, "YAML"):
        load_config(path)


def test_directory_instead_of_file_fails_naming_it(tmp_path):
    with raises_config_error(str(tmp_path)):
        load_config(str(tmp_path))


def test_non_utf8_file_fails_naming_it(tmp_path):
    path = tmp_path / "latin1.yml"
    path.write_bytes("output:\n  name: caf\xe9\n".encode("latin-1"))
    with raises_config_error(str(path)):
        load_config(str(path))


def test_non_ascii_values_load(tmp_path):
    config = load_text(tmp_path, "output:\n  name: café-日本\n")
    assert config.output.name == "café-日本"


# ----------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("config_factory", [
    lambda tmp_path: Config(),
    lambda tmp_path: load_config(write(tmp_path, VALID_YAML)),
    lambda tmp_path: load_config(None, [
        "train.learning_rate=0.00001", "output.name='123'", "output.work_dir='yes'",
        "model.weights=imagenet", "encodings.splits=[train, val, test]", "data.dataset=omniglot",
        "data.root=~/data/omni glot", "loss.margin=0.1",
    ]),
])
def test_save_and_load_round_trip(tmp_path, config_factory):
    config = config_factory(tmp_path)
    path = str(tmp_path / "out" / "resolved.yml")
    save_config(config, path)
    assert load_config(path) == config
    # Nothing but the file itself is left in the folder (atomic write cleaned up).
    assert os.listdir(tmp_path / "out") == ["resolved.yml"]


def test_save_overwrites_existing_file(tmp_path):
    path = str(tmp_path / "resolved.yml")
    save_config(load_config(None, ["train.epochs=3"]), path)
    save_config(load_config(None, ["train.epochs=4"]), path)
    assert load_config(path).train.epochs == 4


# ----------------------------------------------------------------------------- shipped configs


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=os.path.basename)
def test_shipped_config_loads(path):
    config = load_config(path)
    assert isinstance(config, Config)
    assert isinstance(config.data, DataConfig)


def test_exponent_without_dot_is_a_number():
    # YAML 1.1 reads 1e-3 as a string; users write it all the time.
    assert load_config(None, ["train.learning_rate=1e-3"]).train.learning_rate == 0.001


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_rejected(value):
    with pytest.raises(ConfigError, match="loss.margin must be a finite number"):
        load_config(None, [f"loss.margin={value}"])


def test_input_shape_sizes_must_be_positive():
    with pytest.raises(ConfigError, match=r"model.input_shape must be >= 1, received: \(0, 28, 1\)"):
        load_config(None, ["model.input_shape=[0,28,1]"])


@pytest.mark.parametrize("value, expected", [("none", "none"), ("all", "all"), ("3", 3)])
def test_freeze_takes_none_all_or_a_count(value, expected):
    assert load_config(None, [f"model.freeze={value}"]).model.freeze == expected


@pytest.mark.parametrize("value", ["some", "-1"])
def test_freeze_rejects_other_values(value):
    with pytest.raises(ConfigError, match="model.freeze must be none, all or a number"):
        load_config(None, [f"model.freeze={value}"])
