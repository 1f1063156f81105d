"""The data side of a training run, as the config says: the built-in dataset written out, the
splits scanned and decoded (cached in memory when they fit), P x K batches and augmentation.
Part of the training layer, the one reader of the config (with `training_setup`,
`training_outputs` and `training`)."""

import os

import numpy as np

from embedding_net.data.augmentation import build_augmentation
from embedding_net.data.folders import drop_unusable, scan_image_folder
from embedding_net.data.images import find_unreadable, read_images
from embedding_net.data.datasets.registry import get_dataset
from embedding_net.inference.encodings import embed_folder_images
from embedding_net.errors import ConfigError, DatasetError
from embedding_net.data.sampling import pk_dataset
from embedding_net.data.sources import scan_splits, split_by_class
from embedding_net.config.checks import check_data_paths


def prepare_dataset(data):
    """Materialises a shipped dataset in the cache on first use; returns the folder read."""
    check_data_paths(data)
    if data.root is None:
        return get_dataset(data.dataset)(data.folder)
    return data.root


def _cache_in_memory(data, image_shape, count):
    if data.cache != "auto":
        return data.cache == "memory"
    return count * int(np.prod(image_shape)) <= data.cache_max_gb * 2**30


def decode_split(config, folder, min_images_per_class=2):
    """`(ImageFolder, images)` of a scanned split: the images decoded at the model's input size
    when they fit the memory cache (`data.cache`), else None (decoded batch by batch); files
    that cannot be decoded are dropped with one warning."""
    height, width, channels = config.model.input_shape
    if _cache_in_memory(config.data, config.model.input_shape, len(folder)):
        images, failed = read_images(folder.paths, (height, width), channels,
                                     progress=config.train.verbose > 0)
        folder, keep = drop_unusable(folder, failed, min_images_per_class)
        return folder, images[keep]
    failed = find_unreadable(folder.paths, progress=config.train.verbose > 0)
    return drop_unusable(folder, failed, min_images_per_class)[0], None


def load_split(config, split, min_images_per_class=2):
    """Scans and decodes the class folders `<data folder>/<split>` (see `decode_split`)."""
    folder = scan_image_folder(os.path.join(config.data.folder, split), min_images_per_class=1)
    return decode_split(config, folder, min_images_per_class)


def scan_data(config):
    """The train split and, when there is one, the val split, listed but not decoded:
    `{name: ImageFolder}`, from a CSV file or class folders (see `sources.scan_splits`)."""
    data = config.data
    return scan_splits(data.folder, data.train_split, data.val_split, csv_path=data.csv,
                       path_column=data.csv_path_column, label_column=data.csv_label_column,
                       split_column=data.csv_split_column, val_ratio=data.val_ratio, seed=config.train.seed)


def decode_splits(config, scanned):
    """`{name: (ImageFolder, images)}` of scanned splits, each decoded by `decode_split`."""
    return {split: decode_split(config, folder, 2 if split == config.data.train_split else 1)
            for split, folder in scanned.items()}


def load_splits(config):
    """The train split and, when there is one, the val split: `{name: (ImageFolder, images)}`,
    scanned (`scan_data`) and decoded (`decode_splits`)."""
    return decode_splits(config, scan_data(config))


def decode_later(config, splits, later, shown_split, shown):
    """`splits` with the splits named in `later` decoded (when the evaluation needs them), and
    `shown`, indices of images of `shown_split` in the pictures, renumbered for the images
    that remain (unreadable files drop out at decoding)."""
    if not later:
        return splits, shown
    decoded = decode_splits(config, {name: splits[name][0] for name in later})
    if shown_split in decoded:
        paths = {splits[shown_split][0].paths[i] for i in shown}
        shown = np.flatnonzero([path in paths for path in decoded[shown_split][0].paths])
    return {**splits, **decoded}, shown


def fitting_reads_val(config, scanned):
    """Whether training reads the val split (its loss picks the checkpoint: val holds classes
    the model does not train on, see `selection_split`). Only then is val decoded before
    training; otherwise it waits until the evaluation after training embeds it."""
    val, train = scanned.get(config.data.val_split), scanned[config.data.train_split]
    return (val is not None and bool(config.train.validation_steps)
            and not set(val.class_names) & set(train.class_names))


def batches(config, folder, images, seed, classes_per_batch=None, start_batch=0, class_names=None):
    """The P x K `tf.data` pipeline over one split, in memory or decoded on the fly.

    `class_names`, a superset of the folder's, labels the images by their index in it (for
    example the training classes, whose ArcFace centres score the val images)."""
    labels, class_count = folder.labels, len(folder.class_names)
    if class_names is not None:
        index = {name: i for i, name in enumerate(class_names)}
        labels = np.array([index[folder.class_names[label]] for label in folder.labels], np.int32)
        class_count = len(class_names)
    return pk_dataset(
        labels, class_count,
        classes_per_batch or config.data.classes_per_batch, config.data.images_per_class,
        images=images, paths=None if images is not None else folder.paths,
        image_size=config.model.input_shape[:2], channels=config.model.input_shape[2], seed=seed,
        start_batch=start_batch,
    )


def embed_split(config, model, folder, images):
    """Embeddings of a split, from memory or read from disk in bounded chunks."""
    return embed_folder_images(model, folder, images, config.encodings.batch_size)


def build_augmentation_from(data, seed):
    """The albumentations pipeline of `data.augmentation` and `data.transforms` (None: none)."""
    try:
        return build_augmentation(data.augmentation, list(data.transforms), seed)
    except ValueError as error:
        raise ConfigError(f"data.transforms: {error}") from None


def check_batch(config, folder, split):
    """Fails with a one-line error unless the split has the classes a P x K batch needs."""
    if len(folder.class_names) < 2:
        raise DatasetError(f"{folder.root}: fewer than 2 usable classes; nothing to learn from")
    if config.data.classes_per_batch > len(folder.class_names):
        raise ConfigError(
            f"data.classes_per_batch must be at most the {len(folder.class_names)} usable classes "
            f"of the {split} split, received: {config.data.classes_per_batch}"
        )


# The share of each training class held out to choose the checkpoint when val shares the
# train classes; its own seed offset, so it does not follow data.val_ratio's draw.
SELECTION_RATIO = 0.1
SELECTION_SEED_OFFSET = 7


def selection_split(config, splits):
    """What picks the checkpoint and stops early (the `validation_data` of fit), so that the
    reported metrics never come from the images that chose the weights.

    Returns `(training_set, validation_set, description)`:
    - val shares classes with train (the figures are queries against the train images): a
      seeded 10% of each train class is held out of training for the choice, and val is only
      evaluated; `description` is "train_holdout";
    - val holds other classes (Omniglot's unseen characters): val's loss chooses, as before,
      and `description` says "val" so metrics.json discloses it;
    - nothing to choose with (no val, or validation_steps 0): `(None, None)`, "none".
    """
    data = config.data
    train = splits[data.train_split]
    val_folder = splits.get(data.val_split, (None, None))[0]
    if val_folder is None or not config.train.validation_steps:
        return train, (None, None), "none"
    if not set(val_folder.class_names) & set(train[0].class_names):
        return train, splits[data.val_split], "val"
    kept, held = split_by_class(train[0], SELECTION_RATIO, config.train.seed + SELECTION_SEED_OFFSET)
    if len(held) == 0:
        return train, (None, None), "none"
    held_out = np.isin(train[0].paths, held.paths)
    images = train[1]
    return ((kept, None if images is None else images[~held_out]),
            (held, None if images is None else images[held_out]), "train_holdout")
