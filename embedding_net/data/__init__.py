"""Data: class folders and CSV annotations, image decoding, the shipped datasets, augmentation
presets, and P x K batches.

The folder, image and registry modules import no TensorFlow; `sampling` (P x K batches as a
`tf.data` pipeline) and `augmentation` (albumentations inside `tf.data`) do, and load when one
of their names is first used.
"""

import importlib

from embedding_net.data.datasets import get_dataset, list_datasets, materialize_omniglot, register_dataset
from embedding_net.data.folders import ImageFolder, add_rotated_classes, drop_unusable, scan_image_folder
from embedding_net.data.images import IMAGE_EXTENSIONS, find_unreadable, prepare_image, read_image, read_images
from embedding_net.data.presets import get_augmentation, list_augmentations, register_augmentation
from embedding_net.data.sources import read_csv_annotations, scan_splits, split_by_class

_LAZY = {"PKSampler": "sampling", "class_table": "sampling", "pk_dataset": "sampling", "pk_index_dataset": "sampling",
         "BatchAugmenter": "augmentation", "augment_dataset": "augmentation", "build_augmentation": "augmentation",
         "list_transforms": "augmentation"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "add_rotated_classes", "drop_unusable", "find_unreadable",
           "get_augmentation", "get_dataset", "list_augmentations", "list_datasets", "materialize_omniglot",
           "prepare_image", "read_csv_annotations", "read_image", "read_images", "register_augmentation", "register_dataset",
           "scan_image_folder", "scan_splits", "split_by_class", *_LAZY]
