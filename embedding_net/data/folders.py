"""Image folders: `<split>/<class>/<image>` -> paths, integer labels and class names.

Class ids follow the sorted class-folder names, so they are the same on every machine. Images
are decoded by `embedding_net.data.images.read_image` (re-exported here), and CSV annotation files and
`val_ratio` splits live in `embedding_net.data.sources`.

Bad input (each case is tested in tests/test_bad_input.py):

- hidden files, `Thumbs.db`, `desktop.ini` and files without an image extension are not listed;
- class folders without images (empty, or holding only sub-folders: images in sub-folders are
  not read) are excluded by `scan_image_folder` with one warning naming them;
- a file that cannot be decoded (empty, truncated, not an image, over OpenCV's pixel limit) makes
  `read_image` raise `DatasetError`; `read_images` collects these and `drop_unusable` skips them
  with one warning, then excludes the classes left with too few images with a second one.
"""

import dataclasses
import os
import warnings

import numpy as np

from embedding_net.errors import DatasetError
from embedding_net.data.images import IMAGE_EXTENSIONS

# Files that file managers leave in folders; never images, never worth a warning.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})


@dataclasses.dataclass
class ImageFolder:
    """The images of one split: `labels[i]` is the index in `class_names` of `paths[i]`.

    Scanned and CSV folders have sorted `class_names`; every folder has int32 labels that never
    decrease (the images of a class are contiguous) and no class without images.
    """

    root: str
    paths: list
    labels: np.ndarray
    class_names: list

    def __len__(self):
        return len(self.paths)

    def subset(self, keep):
        """A new `ImageFolder` with the images where the boolean mask `keep` holds; classes left
        without images are dropped and labels renumbered."""
        keep = np.asarray(keep, bool)
        kept_labels = self.labels[keep]
        used = np.unique(kept_labels)
        remap = np.full(len(self.class_names), -1, np.int32)
        remap[used] = np.arange(len(used), dtype=np.int32)
        return ImageFolder(
            root=self.root,
            paths=[p for p, k in zip(self.paths, keep) if k],
            labels=remap[kept_labels],
            class_names=[self.class_names[i] for i in used],
        )

    def class_counts(self):
        return np.bincount(self.labels, minlength=len(self.class_names))


def listing(items, limit=10):
    """`a, b, c and 4 more`: the first `limit` items of a warning or error, then a count."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _is_image_file(name):
    return not name.startswith(".") and name.lower() not in _SYSTEM_FILES and (
        os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
    )


def scan_image_folder(folder, min_images_per_class=1):
    """Lists `folder/<class>/<image>` in sorted order.

    A class is a sub-folder holding at least one image file. Sub-folders without any (empty, or
    with images only in nested folders, which are not read) are excluded with one warning.

    Args:
        folder: the split folder, holding one sub-folder per class.
        min_images_per_class: classes with fewer images raise a `DatasetError` naming them.

    Returns:
        An `ImageFolder`.
    """
    if not os.path.isdir(folder):
        raise DatasetError(f"dataset folder not found: {folder}")
    folders = sorted(
        entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not folders:
        raise DatasetError(f"no class folders in {folder}: expected {folder}/<class>/<image>")
    class_names, paths, labels, too_small, empty, nested = [], [], [], [], [], False
    for name in folders:
        class_dir = os.path.join(folder, name)
        entries = list(os.scandir(class_dir))
        files = sorted(entry.name for entry in entries if entry.is_file() and _is_image_file(entry.name))
        if not files:
            empty.append(name)
            nested |= any(entry.is_dir() for entry in entries)
            continue
        if len(files) < min_images_per_class:
            too_small.append(f"{name} ({len(files)})")
        paths.extend(os.path.join(class_dir, f) for f in files)
        labels.extend([len(class_names)] * len(files))
        class_names.append(name)
    hint = " (images in sub-folders of a class folder are not read)" if nested else ""
    if not class_names:
        raise DatasetError(f"no images in the class folders of {folder}{hint}: expected "
                           f"{folder}/<class>/<image>")
    if empty:
        warnings.warn(f"excluded {len(empty)} class folder(s) of {folder} without images{hint}: "
                      f"{listing(empty)}", stacklevel=2)
    if too_small:
        raise DatasetError(
            f"{folder}: every class needs at least {min_images_per_class} images; "
            f"too few in {listing(too_small, 5)}"
        )
    return ImageFolder(folder, paths, np.asarray(labels, np.int32), class_names)


def _reason(path, message):
    prefix = f"cannot read image {path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def drop_unusable(folder, failed, min_images_per_class=2):
    """Removes unreadable files and then classes with too few images, warning once about each.

    Returns:
        `(folder, keep)`: the remaining `ImageFolder` and the boolean mask of kept images.
    """
    keep = np.ones(len(folder), bool)
    if failed:
        bad = {path for path, _ in failed}
        keep &= np.array([p not in bad for p in folder.paths])
        shown = listing(f"{os.path.relpath(path, folder.root)} ({_reason(path, reason)})"
                        for path, reason in sorted(failed))
        warnings.warn(f"skipped {len(failed)} unreadable image(s) in {folder.root}: {shown}", stacklevel=2)
    counts = np.bincount(folder.labels[keep], minlength=len(folder.class_names))
    small = np.flatnonzero(counts < min_images_per_class)
    if len(small):
        keep &= ~np.isin(folder.labels, small)
        names = listing(f"{folder.class_names[i]} ({counts[i]})" for i in small)
        warnings.warn(f"excluded {len(small)} class(es) of {folder.root} with fewer than "
                      f"{min_images_per_class} readable images: {names}", stacklevel=2)
    return folder.subset(keep), keep


def add_rotated_classes(folder, images, quarter_turns=(1, 2, 3)):
    """Adds each image turned by k * 90 degrees as a new class per k (Vinyals et al. 2016).

    For datasets of symbols, such as Omniglot, a rotated character is a different character:
    this multiplies the training classes by `1 + len(quarter_turns)`.

    Returns:
        `(folder, images)` with the new classes named `<class>@rot<degrees>`.
    """
    if images.shape[1] != images.shape[2]:
        raise DatasetError("rotated classes need square images; set data.rotate_classes: false")
    num_classes = len(folder.class_names)
    all_images, labels, paths, names = [images], [folder.labels], list(folder.paths), list(folder.class_names)
    for turn_index, turns in enumerate(quarter_turns, start=1):
        all_images.append(np.rot90(images, k=turns, axes=(1, 2)))
        labels.append(folder.labels + turn_index * num_classes)
        paths.extend(folder.paths)
        names.extend(f"{name}@rot{90 * turns}" for name in folder.class_names)
    return (ImageFolder(folder.root, paths, np.concatenate(labels).astype(np.int32), names),
            np.ascontiguousarray(np.concatenate(all_images)))
