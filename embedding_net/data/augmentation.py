"""Augmentation with albumentations: named presets plus transforms described in the YAML.

Augmentation belongs to the training input pipeline only; the caller (`training.py`) leaves
validation, encodings and evaluation un-augmented. Every batch is augmented from a seed derived
from `(seed, batch index)`, as `sampling.py` draws its batches: the result does not depend on
threads, parallel calls or what was drawn before, so a resumed run sees the same images.
"""

import collections.abc
import copy
import difflib
import inspect
import threading

import albumentations as A
import numpy as np
import tensorflow as tf
from albumentations.core import transforms_interface

from embedding_net.data.presets import get_augmentation, list_augmentations

def list_transforms():
    """The names of the albumentations transforms that `transforms` entries may use."""
    return sorted(
        name for name, value in vars(A).items()
        if isinstance(value, type) and issubclass(value, transforms_interface.BasicTransform)
        and value.__module__ != transforms_interface.__name__)  # not the abstract base classes


def _tuples(value):
    """YAML lists -> tuples, recursively (albumentations ranges are tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, collections.abc.Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _one_line(error):
    lines = [line.strip() for line in str(error).splitlines()
             if line.strip() and not line.strip().startswith("For further information")]
    return "; ".join(lines) or type(error).__name__


def build_transform(spec):
    """One albumentations transform from its YAML form, e.g.
    `{"name": "Affine", "rotate": [-10, 10], "p": 0.5}` (the other keys are its arguments).

    Raises:
        ValueError: the entry is not a mapping with a `name`, the name is not an
            albumentations transform (near matches are listed), an argument is not one the
            transform takes, or albumentations rejects a value (its message, on one line).
    """
    if not isinstance(spec, collections.abc.Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(f"a transform must be a mapping with a `name`, e.g. {{name: Affine, rotate: [-10, 10]}}. "
                         f"Received: {spec!r}")
    name = spec["name"]
    arguments = _tuples({k: v for k, v in spec.items() if k != "name"})
    names = list_transforms()
    if name not in names:
        lower = {n.lower(): n for n in names}
        close = ([lower[name.lower()]] if name.lower() in lower else []) + difflib.get_close_matches(name, names, 3)
        hint = f" Did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
        raise ValueError(f"{name!r} is not an albumentations transform (albumentations {A.__version__}).{hint} "
                         "See embedding_net.data.augmentation.list_transforms().")
    cls = getattr(A, name)
    parameters = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(arguments) - set(parameters) - {"self"})
        if unknown:
            valid = ", ".join(p for p in parameters if p != "self")
            raise ValueError(f"transform {name!r} has no argument {', '.join(map(repr, unknown))}; "
                             f"valid arguments: {valid}")
    try:
        return cls(**arguments)
    except Exception as error:  # pydantic, TypeError, ...: all mean a bad argument value here
        raise ValueError(f"transform {name!r} rejects arguments {arguments}: {_one_line(error)}") from None


def build_augmentation(preset="none", transforms=None, seed=None):
    """An `albumentations.Compose` of a named preset followed by `transforms`, or None.

    Presets, for grayscale character images (Omniglot) and RGB photos alike; borders repeat
    the edge pixels:

    - `none`: no augmentation.
    - `light`: a small affine distortion half of the time (shift +-4 %, scale 0.95-1.05,
      rotation +-5 degrees).
    - `default`: the affine distortions of Koch et al. 2015 for one-shot Omniglot (rotation
      +-10 degrees, shear +-17 degrees, scale 0.8-1.2, shift +-2 %; 80 % of the images), a
      mild grid distortion (a quarter of the images: stroke shapes vary as between drawers)
      and +-10 % brightness / contrast (30 %). No cutout: a hole can change a small
      character's identity, and no single fill value suits dark-on-light and light-on-dark
      images.

    Args:
        preset: `none`, `light` or `default`.
        transforms: YAML-style transform entries appended after the preset (see
            `build_transform`), e.g. `[{"name": "HorizontalFlip", "p": 0.5}]`.
        seed: the seed of the Compose's own random generator (for direct calls; batches
            from `BatchAugmenter` / `augment_dataset` are reseeded per batch).

    Returns:
        An `albumentations.Compose`, or None when there is nothing to apply.
    """
    if preset not in list_augmentations():
        raise ValueError(f"`preset` must be one of {', '.join(list_augmentations())}. Received: {preset!r}")
    if transforms is not None and not isinstance(transforms, (list, tuple)):
        raise ValueError(f"`transforms` must be a list of transforms. Received: {transforms!r}")
    steps = get_augmentation(preset)() + [build_transform(spec) for spec in (transforms or ())]
    if not steps:
        return None
    return A.Compose(steps, seed=seed)


def _batch_seed(seed, batch_index):
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1)[0])


class BatchAugmenter:
    """`augment_batch(images) -> images` for uint8 batches [B, H, W, C], C = 1 or 3.

    Each image gets its own random draw; the draws of batch i depend only on `(seed, i)`.
    Called without `batch_index`, the batches are numbered 0, 1, 2, ... in call order (for a
    Python generator); `augment_dataset` passes the index itself. Safe to call from several
    threads at once (each thread uses its own copy of the Compose).

    Args:
        augmentation: an `albumentations.Compose` (e.g. from `build_augmentation`) or None
            (identity). Its transforms must keep the image size.
        seed: an integer >= 0, or None for a random one.
    """

    def __init__(self, augmentation, seed=None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"`seed` must be None or an integer >= 0. Received: {seed!r}")
        self.augmentation = augmentation
        self.seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._next_index = 0

    def __call__(self, images, batch_index=None):
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.dtype != np.uint8:
            raise ValueError("images must be uint8 [B, H, W, C] with C = 1 or 3. "
                             f"Received: {images.dtype} {images.shape}")
        if batch_index is None:
            with self._lock:
                batch_index, self._next_index = self._next_index, self._next_index + 1
        if self.augmentation is None:
            return images
        compose = getattr(self._local, "compose", None)
        if compose is None:
            compose = self._local.compose = copy.deepcopy(self.augmentation)
        compose.set_random_seed(_batch_seed(self.seed, int(batch_index)))
        output = np.empty_like(images)
        for i, image in enumerate(images):
            result = np.asarray(compose(image=image)["image"])
            if result.ndim == 2:  # a transform that drops the single channel axis
                result = result[..., None]
            if result.shape != image.shape:
                raise ValueError(f"augmentation changed the image shape from {image.shape} to {result.shape}; "
                                 "use transforms that keep the size")
            output[i] = result if result.dtype == np.uint8 else np.clip(np.rint(result), 0, 255)
        return output


def augment_dataset(dataset, augmentation, seed=0, start_batch=0):
    """Augments the image batches of a `tf.data.Dataset` of `(images, labels, ...)` batches.

    Images must be uint8 [B, H, W, C]; they keep their dtype and static shape, the other
    elements pass unchanged. Batches are numbered from `start_batch` (to resume a run at the
    same draws), and batch i is augmented from `(seed, i)` whatever the parallelism.

    Args:
        dataset: yields `images` or a tuple whose first element is `images`, e.g. `pk_dataset`.
        augmentation: an `albumentations.Compose` or None (the dataset is returned unchanged).
        seed: an integer >= 0.
        start_batch: the index of the first batch.
    """
    if augmentation is None:
        return dataset
    augment_batch = BatchAugmenter(augmentation, seed)

    def augment(index, element):
        images, rest = (element[0], tuple(element[1:])) if isinstance(element, tuple) else (element, None)
        if images.dtype != tf.uint8:
            raise ValueError(f"augment_dataset needs uint8 images. Received: {images.dtype.name}")
        augmented = tf.numpy_function(augment_batch, [images, index], tf.uint8, name="albumentations")
        augmented.set_shape(images.shape)
        return augmented if rest is None else (augmented, *rest)

    return dataset.enumerate(start=start_batch).map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)
