"""Each chosen component owns its settings: a key it does not read is refused with one line
naming the key, the component and the keys it takes; moved keys say where they went; a saved
config holds exactly the keys that apply and loads back as the same config."""

import itertools
import warnings

import pytest
import yaml

from embedding_net.config.components import ConfigWarning
from embedding_net.config.loading import config_from_dict, config_to_dict, load_config, save_config
from embedding_net.config.components import MOVED_KEYS
from embedding_net.errors import ConfigError
from embedding_net.losses.registry import ARCHITECTURES, list_losses, loss_settings
from embedding_net.models.architectures import architecture_entry
from embedding_net.optim.optimizers import list_optimizers, optimizer_settings
from embedding_net.optim.schedules import list_schedules, schedule_settings

LOSS_KEYS = ("mining", "margin", "scale", "soft_margin", "cross_replica", "positive_margin", "negative_margin")


def loss_combinations():
    for architecture in ARCHITECTURES:
        for name in list_losses(architecture):
            yield architecture, name


def base(architecture, name):
    overrides = [f"model.architecture={architecture}", f"loss.name={name}"]
    heads = architecture_entry(architecture).info.get("head_losses")
    if heads:
        head = next(h for h, loss in heads.items() if loss == name)
        overrides.append(f"model.siamese_head={head}")
    return overrides


def test_the_issue_example_names_the_key_the_loss_and_what_it_takes():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["loss.scale=30"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("loss.scale is not a setting of the triplet loss; it takes: ")
    for key in loss_settings("triplet"):
        assert key in message


@pytest.mark.parametrize("architecture, name", list(loss_combinations()))
def test_every_loss_takes_its_settings_and_refuses_the_others(architecture, name):
    values = {"mining": None, "margin": 0.3, "scale": 20.0, "soft_margin": True, "cross_replica": True,
              "positive_margin": 0.1, "negative_margin": 0.9}
    takes = set(loss_settings(name, architecture))
    for key in LOSS_KEYS:
        value = values[key]
        if key == "mining":
            continue  # its values depend on the architecture: tested below
        overrides = base(architecture, name) + [f"loss.{key}={value}"]
        if key in takes:
            assert getattr(load_config(None, overrides).loss, key) == value
        else:
            with pytest.raises(ConfigError, match=f"loss.{key} is not a setting of the {name} loss"):
                load_config(None, overrides)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_mining_is_checked_against_the_architectures_kind(architecture):
    from embedding_net.mining.registry import list_minings
    kind = architecture_entry(architecture).info["mining"]
    name = next(n for n in list_losses(architecture) if "mining" in loss_settings(n, architecture))
    for rule in list_minings(kind):
        assert load_config(None, base(architecture, name) + [f"loss.mining={rule}"]).loss.mining == rule
    with pytest.raises(ConfigError, match=f"loss.mining of model.architecture {architecture} must be one of"):
        load_config(None, base(architecture, name) + ["loss.mining=nearest"])


@pytest.mark.parametrize("optimizer", list_optimizers())
def test_optimizer_settings(optimizer):
    for key, value in (("momentum", 0.5), ("nesterov", True), ("weight_decay", 0.01)):
        overrides = [f"train.optimizer={optimizer}", f"train.{key}={value}"]
        if key in optimizer_settings(optimizer):
            assert getattr(load_config(None, overrides).train, key) == value
        else:
            with pytest.raises(ConfigError, match=f"train.{key} is not a setting of the {optimizer} optimizer"):
                load_config(None, overrides)


@pytest.mark.parametrize("schedule", list_schedules())
def test_schedule_settings(schedule):
    for key, value in (("warmup_epochs", 1), ("step_size", 2), ("plateau_patience", 3), ("decay_factor", 0.3)):
        overrides = [f"train.lr_schedule={schedule}", f"train.{key}={value}"]
        if key in schedule_settings(schedule):
            assert getattr(load_config(None, overrides).train, key) == value
        else:
            with pytest.raises(ConfigError, match=f"train.{key} is not a setting of the {schedule} learning-rate"):
                load_config(None, overrides)


def test_architecture_settings_cross_sections():
    with pytest.raises(ConfigError, match="model.siamese_head is not a setting of the embedding architecture"):
        load_config(None, ["model.siamese_head=l1"])
    with pytest.raises(ConfigError, match="data.batch_size is not a setting of the embedding architecture"):
        load_config(None, ["data.batch_size=64"])
    config = load_config(None, ["model.architecture=triplet", "data.batch_size=64"])
    assert config.data.batch_size == 64


@pytest.mark.parametrize("key", sorted(MOVED_KEYS))
def test_moved_keys_say_where_they_went(key):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as info:
        config_from_dict({section: {name: "random"}})
    assert str(info.value).startswith(f"{key} has moved to loss.mining")


@pytest.mark.parametrize("old, new", [("semihard", "semi_hard"), ("hardest", "hard")])
def test_renamed_mining_values_load_with_a_warning(old, new):
    with pytest.warns(ConfigWarning, match=f"loss.mining: {old} is now called {new}"):
        config = load_config(None, ["model.architecture=triplet", f"loss.mining={old}"])
    assert config.loss.mining == new


def test_distance_applies_to_every_loss():
    assert load_config(None, ["loss.name=arcface", "loss.distance=cosine"]).loss.distance == "cosine"


def combinations():
    for (architecture, name), optimizer, schedule in itertools.product(
            loss_combinations(), list_optimizers(), list_schedules()):
        yield base(architecture, name) + [f"train.optimizer={optimizer}", f"train.lr_schedule={schedule}"]


def test_saved_configs_hold_only_what_applies_and_load_back_the_same(tmp_path):
    path = tmp_path / "config.yml"
    for overrides in combinations():
        config = load_config(None, overrides)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            save_config(config, str(path))
            assert load_config(str(path)) == config
        saved = yaml.safe_load(path.read_text())
        assert set(saved["train"]) >= set(optimizer_settings(config.train.optimizer))
        assert set(saved["loss"]) - {"name", "distance"} == set(loss_settings(config.loss.name, config.model.architecture)) - {"distance"}
        assert config_from_dict(config_to_dict(config)) == config


def test_null_drops_a_setting_the_new_loss_does_not_take(tmp_path):
    # configs/omniglot.yml sets loss.mining and loss.margin; switching it to a proxy loss drops them.
    import os

    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "omniglot.yml")
    with pytest.raises(ConfigError, match="loss.mining is not a setting of the proxy_anchor loss"):
        load_config(shipped, ["loss.name=proxy_anchor"])
    config = load_config(shipped, ["loss.name=proxy_anchor", "loss.mining=null", "loss.margin=null"])
    assert config.loss.mining is None and config.loss.margin is None
