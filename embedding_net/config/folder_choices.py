"""What `train.py --data DIR` chooses from the data, so a first run on one's own folder needs
no lookup: colour or grayscale, the input size, P and K, the backbone, where val comes from.

The choices are `section.key` values applied between the config file and `--set` (defaults <
YAML < these < `--set`), printed in one short block and saved in the run's config.yml like
every other key. TensorFlow-free: they are made before it is imported.
"""

import os
import typing

import numpy as np

from embedding_net.data.folders import scan_image_folder
from embedding_net.data.images import read_image
from embedding_net.errors import DatasetError

# Square input sides tried, largest first; the one chosen is the largest at most the median
# shorter side of the images, capped at MAX_SIDE: a from-scratch conv4 gains nothing from more
# pixels at equal steps (Omniglot: 56 px did not beat 28 px) and each doubling costs 4x.
SIDES = (64, 56, 48, 40, 32, 28)
MAX_SIDE = 64
BATCH = 128              # P x K, the shipped configs' batch
IMAGES_PER_CLASS = 4     # K
SAMPLED_IMAGES = 200     # images decoded to choose colour and size
VAL_RATIO = 0.2          # held out of every class when there is no val/ folder


class FolderChoices(typing.NamedTuple):
    values: dict         # "section.key" -> value
    lines: list          # the block printed before training


def _sample(paths, seed):
    rng = np.random.default_rng(seed)
    return [paths[i] for i in sorted(rng.choice(len(paths), min(SAMPLED_IMAGES, len(paths)), replace=False))]


def _is_gray(image):
    return bool(np.abs(image.astype(np.int16) - image[..., :1]).max() <= 2)


def choose_for_folder(root, seed=0):
    """The choices for the folder `root` (holding train/<class>/<image>, optionally val/)."""
    root = os.path.normpath(root)  # `photos/` and `photos` are one folder, one run
    train = scan_image_folder(os.path.join(root, "train"))
    gray, sides = True, []
    for path in _sample(train.paths, seed):  # one image in memory at a time: photos are large
        try:
            image = read_image(path, None, 3)
        except DatasetError:
            continue  # reported once, when the split is decoded for training
        gray, sides = gray and _is_gray(image), sides + [min(image.shape[:2])]
    if not sides:
        raise DatasetError(f"no readable image among {min(SAMPLED_IMAGES, len(train.paths))} sampled in {root}/train")
    shorter = int(np.median(sides))
    side = next((s for s in SIDES if s <= min(shorter, MAX_SIDE)), SIDES[-1])
    counts = np.bincount(train.labels, minlength=len(train.class_names))
    classes = len(train.class_names)
    # Training drops classes of one image (no positive pair): P and K count the others.
    usable = counts[counts >= 2] if (counts >= 2).any() else counts
    # K: a class's images are positives of each other; more than it has means repeats.
    per_class = int(min(IMAGES_PER_CLASS, max(2, np.median(usable))))
    classes_per_batch = max(2, min(len(usable), BATCH // per_class))
    short = int((counts < per_class).sum())
    has_val = os.path.isdir(os.path.join(root, "val"))
    values = {
        "data.root": root, "data.dataset": None, "data.rotate_classes": False,
        "data.classes_per_batch": classes_per_batch, "data.images_per_class": per_class,
        "data.val_ratio": None if has_val else VAL_RATIO,
        "model.backbone": "conv4", "model.weights": None,
        "model.input_shape": [side, side, 1 if gray else 3],
        "output.name": os.path.basename(os.path.abspath(root)) or "data",
    }
    lines = [
        f"data: {root}: {len(train)} training images in {classes} classes "
        f"({int(counts.min())} to {int(counts.max())} per class)",
        f"  images: {'grayscale' if gray else 'colour'}, median shorter side {shorter} px "
        f"-> model.input_shape [{side}, {side}, {1 if gray else 3}]",
        f"  batch: {classes_per_batch} classes x {per_class} images"
        + (f"; {short} classes with fewer than {per_class} images are drawn with repetition" if short else ""),
        "  val: " + (f"{root}/val" if has_val else f"{VAL_RATIO:.0%} of each class held out of train (seeded)"),
        "  model: conv4 from random weights (for photos, a pretrained backbone does better: "
        "configs/template.yml on a machine that can download weights)",
        "  any --set overrides these choices; all are saved in the run's config.yml",
    ]
    return FolderChoices(values, lines)
