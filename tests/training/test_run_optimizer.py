"""The run's optimizer from the config: the backbone at `train.backbone_lr_multiplier` times the
learning rate, the head at the full rate; `train.layer_decay` only for transformer backbones."""

import pytest

from helpers import tiny_overrides
from embedding_net.config import load_config
from embedding_net.errors import ConfigError
from embedding_net.models import build_embedding_model
from embedding_net.optim import LearningRateMultipliers
from embedding_net.training import runner
from embedding_net.training.setup import run_optimizer


def test_backbone_variables_get_the_multiplier_and_the_head_the_full_rate():
    config = load_config(None, ["train.backbone_lr_multiplier=0.25"])
    model = build_embedding_model("conv4", (28, 28, 1), 8)
    optimizer = run_optimizer(config, model)
    assert isinstance(optimizer, LearningRateMultipliers)
    tower = {v.path for v in model.get_layer("conv4").weights}
    assert optimizer.multipliers and set(optimizer.multipliers) == tower
    assert set(optimizer.multipliers.values()) == {0.25}
    head = [v for v in model.weights if v.path not in tower]
    assert head and not any(v.path in optimizer.multipliers for v in head)


@pytest.mark.parametrize("overrides, expected", [
    (["loss.name=proxy_anchor"], 100.0),  # the loss's own default, the paper's
    (["loss.name=proxy_anchor", "loss.proxy_lr_multiplier=10"], 10.0),
    (["loss.name=cosface", "loss.proxy_lr_multiplier=3", "train.backbone_lr_multiplier=0.5"], 3.0),
])
def test_class_centres_get_the_proxy_multiplier(overrides, expected):
    from embedding_net.losses.proxies import ClassCentres, CosFace, build_proxy_model

    config = load_config(None, overrides + ["loss.distance=cosine"])
    model = build_embedding_model("conv4", (28, 28, 1), 8)
    head = (ClassCentres if config.loss.name == "proxy_anchor" else CosFace)(5, name=config.loss.name)
    optimizer = run_optimizer(config, model, build_proxy_model(model, head))
    assert isinstance(optimizer, LearningRateMultipliers)
    assert optimizer.multipliers[head.centers.path] == expected
    tower = {v.path for v in model.get_layer("conv4").weights}
    assert {optimizer.multipliers.get(path, 1.0) for path in tower} == {config.train.backbone_lr_multiplier}


def test_without_multipliers_the_optimizer_is_the_plain_one():
    optimizer = run_optimizer(load_config(None, []), build_embedding_model("conv4", (28, 28, 1), 8))
    assert not isinstance(optimizer, LearningRateMultipliers)


def test_layer_decay_is_refused_for_a_convolutional_backbone(tmp_path):
    config = load_config(None, tiny_overrides(str(tmp_path / "data"), str(tmp_path)) + ["train.layer_decay=0.8"])
    with pytest.raises(ConfigError, match="train.layer_decay applies to the transformer backbones"):
        runner.run(config)
