"""Nothing of val is decoded before training unless training reads it: a val split that shares
the train classes waits until the evaluation embeds it, and its unreadable files drop out then,
the pictures' indices following."""

import os

import cv2
import numpy as np

from helpers import tiny_overrides
from embedding_net import training
from embedding_net.config.loading import load_config
from embedding_net.training import data as training_data
from embedding_net.training.runner import _load_data


def _shared_classes_folder(root, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", 6), ("val", 3)):
        for label in range(8):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                image = np.full((28, 28), 255, np.uint8)
                cv2.circle(image, (14, 14), 3 + label, 0, 1 + index % 2)
                cv2.imwrite(str(folder / f"{index}.png"), np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8))
    (root / "val" / "class_0" / "0_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return str(root)


def _config(root, tmp_path, *extra):
    return load_config(None, tiny_overrides(root, tmp_path) + [
        "data.dataset=null", "data.classes_per_batch=4", "evaluation.episodes=10", *extra])


def test_val_sharing_the_train_classes_is_decoded_after_training(tmp_path):
    root = _shared_classes_folder(tmp_path / "data")
    config = _config(root, tmp_path)
    splits, _, (_, selection), later = _load_data(config)
    assert later == ["val"] and selection == "train_holdout"
    assert splits["val"][1] is None and splits["train"][1] is not None
    val = splits["val"][0]
    broken = val.paths.index(os.path.join(root, "val", "class_0", "0_broken.png"))
    shown = np.array([broken - 1, broken, broken + 1, len(val) - 1])
    decoded, renumbered = training_data.decode_later(config, splits, later, "val", shown)
    assert decoded["val"][1].shape == (len(val) - 1, 28, 28, 1)
    assert [decoded["val"][0].paths[i] for i in renumbered] == [val.paths[i] for i in shown if i != broken]


def test_val_that_chooses_the_checkpoint_is_decoded_before(omniglot_subset, tmp_path):
    splits, _, (_, selection), later = _load_data(load_config(None, tiny_overrides(omniglot_subset, tmp_path)))
    assert later == [] and selection == "val" and splits["val"][1] is not None


def test_a_run_with_pictures_and_a_broken_val_file_evaluates_the_readable_ones(tmp_path, recwarn):
    root = _shared_classes_folder(tmp_path / "data")
    config = _config(root, tmp_path, "evaluation.plots=true", "evaluation.tsne_max_points=30")
    metrics = training.run(config)
    assert metrics["queries"] == 8 * 3 and metrics["checkpoint_selection"] == "train_holdout"
    assert os.path.isfile(os.path.join(config.run_dir, "plots", "tsne_after.png"))
    assert any("0_broken.png" in str(w.message) for w in recwarn)
