"""Every shipped config loads, and trains a few steps on a small dataset, writing a model."""

import glob
import os

import numpy as np
import pytest

from helpers import tiny_overrides
from embedding_net.training import runner as training
from embedding_net.config.loading import load_config
from embedding_net.models.builders import load_embedding_model

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "*.yml")))
SHIPPED = {"omniglot.yml", "omniglot_batch_hard.yml", "omniglot_siamese_contrastive.yml",
           "omniglot_siamese_l1.yml", "omniglot_triplet_generator.yml", "omniglot_arcface.yml",
           "template.yml"}


def test_every_promised_config_is_shipped():
    assert SHIPPED <= {os.path.basename(path) for path in CONFIGS}


@pytest.fixture(scope="module")
def rgb_folder(tmp_path_factory):
    """A tiny RGB photo-like dataset: 6 classes of coloured squares, train/ only."""
    import cv2

    root = tmp_path_factory.mktemp("rgb")
    rng = np.random.default_rng(0)
    for label in range(6):
        colour = rng.integers(0, 256, 3)
        os.makedirs(root / "train" / f"class_{label}")
        for index in range(6):
            image = np.clip(rng.normal(colour, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / "train" / f"class_{label}" / f"{index}.jpg"), image)
    return str(root)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_trains_a_few_steps(path, omniglot_subset, rgb_folder, tmp_path, monkeypatch):
    config = load_config(path)  # as shipped: every key valid
    name = os.path.basename(path)[:-4]
    overrides = tiny_overrides(omniglot_subset, tmp_path, name=name) + [
        "train.epochs=1", "train.steps_per_epoch=2", "train.validation_steps=1", "evaluation.episodes=20"]
    if config.data.batch_size is not None:
        overrides.append("data.batch_size=8")
    if name == "template":
        # ImageNet weights cannot be downloaded here; the architecture and every other key are as shipped.
        overrides = [o for o in overrides if not o.startswith(("data.root", "data.dataset"))] + [
            f"data.root={rgb_folder}", "model.weights=null", "model.input_shape=[32, 32, 3]",
            "data.classes_per_batch=3", "data.val_ratio=0.34", "encodings.max_per_class=3"]
    if name == "template_dinov2":
        # Preset weights cannot be downloaded here; the same code on a 2-block, 32-wide ViT/14 at 28 px.
        from embedding_net.models import hub

        monkeypatch.setitem(hub.ARCHITECTURES, "dinov2_small", dict(
            hub.ARCHITECTURES["dinov2_small"], num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64))
        overrides += ["model.weights=null", "model.input_shape=[28, 28, 3]", "model.freeze=1"]
    config = load_config(path, overrides)
    metrics = training.run(config)
    assert np.isfinite(metrics["train_seconds"])
    assert 0.0 <= metrics["top1_accuracy"] <= 1.0
    model = load_embedding_model(os.path.join(config.run_dir, "model.keras"))
    assert model.output_shape == (None, 16)
