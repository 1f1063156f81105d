"""Every registry behaves alike (`register_*`, `get_*`, `list_*`), and every registered entry
builds and round-trips: a new component is tested by being registered."""

import keras
import numpy as np
import pytest

from embedding_net.data import get_augmentation, get_dataset, list_augmentations, list_datasets
from embedding_net.data.augmentation import build_augmentation
from embedding_net.errors import ConfigError
from embedding_net.evaluation import get_distance, list_distances
from embedding_net.losses import ARCHITECTURES, get_loss, list_losses, loss_info, loss_settings
from embedding_net.mining import KINDS, get_mining, list_minings
from embedding_net.models import get_architecture, get_backbone, list_architectures, list_backbones
from embedding_net.optim import build_learning_rate, build_optimizer, get_optimizer, get_schedule
from embedding_net.optim import list_optimizers, list_schedules, optimizer_settings
from embedding_net.registry import Registry

LOOKUPS = [
    ("loss", lambda name: get_loss(name), lambda: list_losses("embedding")),
    ("loss", lambda name: get_loss(name, "siamese"), lambda: list_losses("siamese")),
    ("mining", lambda name: get_mining(name), list_minings),
    ("mining", lambda name: get_mining(name, "pairs"), lambda: list_minings("pairs")),
    ("distance", get_distance, list_distances),
    ("optimizer", get_optimizer, list_optimizers),
    ("learning-rate schedule", get_schedule, list_schedules),
    ("augmentation preset", get_augmentation, list_augmentations),
    ("dataset", get_dataset, list_datasets),
    ("architecture", get_architecture, list_architectures),
]


@pytest.mark.parametrize("kind, get, names", LOOKUPS, ids=[f"{entry[0]}-{i}" for i, entry in enumerate(LOOKUPS)])
def test_unknown_names_are_refused_with_the_known_ones(kind, get, names):
    listed = names()
    assert listed and listed == sorted(listed)
    for name in listed:
        assert get(name) is not None
    with pytest.raises(ConfigError) as info:
        get("no_such_thing")
    message = str(info.value)
    assert "\n" not in message and "'no_such_thing'" in message and kind in message
    assert message.endswith(", ".join(listed))


def test_backbone_registry_lists_and_refuses():
    assert "conv4" in list_backbones()
    with pytest.raises(ValueError, match="no_such_backbone"):
        get_backbone("no_such_backbone")


def test_a_name_is_registered_once():
    registry = Registry("widget")
    registry.register("a")(lambda size=1: size)
    assert registry.settings("a") == ("size",)
    with pytest.raises(ValueError, match="widget 'a' is registered already"):
        registry.register("a")(lambda: None)


def every_loss():
    return [(architecture, name) for architecture in ARCHITECTURES for name in list_losses(architecture)]


@pytest.mark.parametrize("architecture, name", every_loss())
def test_every_loss_round_trips_through_keras_serialisation(architecture, name):
    cls = get_loss(name, architecture)
    info = loss_info(name, architecture)
    arguments = {"num_classes": 3} if info.get("head") == "logits" else {}
    loss = cls(**arguments)
    config = keras.saving.serialize_keras_object(loss)
    restored = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert type(restored) is cls and restored.get_config() == loss.get_config()
    # Every setting the loss declares is a constructor argument, read by the mining generator,
    # (a proxy loss's) by the training layer: the centres' count and learning rate, or (a
    # pair-based loss's) by its cross-batch memory, which must then give it references.
    for key in loss_settings(name, architecture):
        assert key in restored.get_config() or key in ("mining", "distance") or (
            "head" in info and key in ("sub_centers", "proxy_lr_multiplier")) or (
            key in ("memory_size", "memory_warmup_steps") and callable(getattr(loss, "references_loss", None)))


@pytest.mark.parametrize("kind", KINDS)
def test_every_mining_kind_has_rules(kind):
    assert list_minings(kind) and all(callable(get_mining(name, kind)) for name in list_minings(kind))


@pytest.mark.parametrize("name", list_distances())
def test_every_distance_has_its_keras_form_and_they_agree(name):
    from embedding_net.evaluation import distance_matrix
    from embedding_net.mining.distances import BATCH_DISTANCES, pairwise_distances

    assert set(BATCH_DISTANCES) == set(list_distances())
    x = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    batch = keras.ops.convert_to_numpy(pairwise_distances(x, name))
    off_diagonal = ~np.eye(6, dtype=bool)
    assert np.allclose(batch[off_diagonal], distance_matrix(x, x, name)[off_diagonal], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_optimizers())
def test_every_optimizer_builds_and_round_trips(name):
    settings = {"momentum": 0.5, "nesterov": True, "weight_decay": 0.01}
    optimizer = build_optimizer(name, 0.01, **{k: settings[k] for k in optimizer_settings(name)})
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer)
    with pytest.raises(ValueError, match="takes"):
        build_optimizer(name, 0.01, no_such_setting=1)


@pytest.mark.parametrize("name", list_schedules())
def test_every_schedule_gives_a_learning_rate(name):
    rate = build_learning_rate(0.1, name, total_steps=10)
    value = float(rate(3)) if callable(rate) else float(rate)
    assert 0 < value <= 0.1


@pytest.mark.parametrize("name", list_augmentations())
def test_every_augmentation_preset_builds(name):
    augmentation = build_augmentation(name, seed=0)
    assert (augmentation is None) == (get_augmentation(name)() == [])
