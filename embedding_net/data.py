"""Image folders: `<split>/<class>/<image>` -> paths, integer labels and class names.

Class ids follow the sorted class-folder names, so they are the same on every machine. Images
are read with OpenCV (any format it reads), converted to the requested channels and resized
to the model's input size; `read_image` is the one place that does it, for training,
evaluation and `test.py` alike.
"""

import concurrent.futures
import dataclasses
import os
import warnings

import cv2
import numpy as np

from embedding_net.errors import DatasetError

# Extensions OpenCV's imread understands; other files in a class folder are ignored.
IMAGE_EXTENSIONS = frozenset(
    ".bmp .dib .jpeg .jpg .jpe .jp2 .png .webp .pbm .pgm .ppm .pxm .pnm .sr .ras .tiff .tif "
    ".exr .hdr .pic .avif".split()
)
# Files that file managers leave in folders; never images, never worth a warning.
_SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})


@dataclasses.dataclass
class ImageFolder:
    """The images of one split: `labels[i]` is the index in `class_names` of `paths[i]`."""

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


def _is_image_file(name):
    return not name.startswith(".") and name.lower() not in _SYSTEM_FILES and (
        os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
    )


def scan_image_folder(folder, min_images_per_class=1):
    """Lists `folder/<class>/<image>` in sorted order.

    Args:
        folder: the split folder, holding one sub-folder per class.
        min_images_per_class: classes with fewer images raise a `DatasetError` naming them.

    Returns:
        An `ImageFolder`.
    """
    if not os.path.isdir(folder):
        raise DatasetError(f"dataset folder not found: {folder}")
    class_names = sorted(
        entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(".")
    )
    if not class_names:
        raise DatasetError(f"no class folders in {folder}: expected {folder}/<class>/<image>")
    paths, labels, too_small = [], [], []
    for label, name in enumerate(class_names):
        class_dir = os.path.join(folder, name)
        files = sorted(
            entry.name for entry in os.scandir(class_dir) if entry.is_file() and _is_image_file(entry.name)
        )
        if len(files) < min_images_per_class:
            too_small.append(f"{name} ({len(files)})")
        paths.extend(os.path.join(class_dir, f) for f in files)
        labels.extend([label] * len(files))
    if too_small:
        listed = ", ".join(too_small[:5]) + (f" and {len(too_small) - 5} more" if len(too_small) > 5 else "")
        raise DatasetError(
            f"{folder}: every class needs at least {min_images_per_class} images; "
            f"too few in {listed}"
        )
    return ImageFolder(folder, paths, np.asarray(labels, np.int32), class_names)


def _to_uint8(image):
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    image = image.astype(np.float32)
    if image.max() <= 1.0:  # float images (EXR, HDR) are usually in [0, 1]
        image = image * 255.0
    return np.clip(image, 0, 255).astype(np.uint8)


def _to_channels(image, channels):
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:  # drop alpha over a white background, as viewers show it
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = (image[:, :, :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    elif channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def read_image(path, size=None, channels=3):
    """Reads an image as uint8 [height, width, channels], RGB or grayscale.

    Args:
        path: any file OpenCV decodes; non-ASCII paths work.
        size: `(height, width)` to resize to (area interpolation when shrinking), or None.
        channels: 1 (grayscale) or 3 (RGB).

    Raises:
        DatasetError: the file is missing or not a readable image.
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error.strerror or error}") from None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DatasetError(f"cannot read image {path}: not an image OpenCV can decode")
    image = _to_channels(_to_uint8(image), channels)
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        height, width = size
        shrinking = height * width < image.shape[0] * image.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (width, height), interpolation=interpolation)
        if image.ndim == 2:
            image = image[:, :, None]
    return image


def read_images(paths, size, channels, workers=None, progress=False):
    """Reads many images in parallel threads (OpenCV releases the GIL while decoding).

    Returns:
        `(images, failed)`: uint8 [N, height, width, channels] with zeros where a file failed,
        and the list of `(path, reason)` that failed.
    """
    images = np.zeros((len(paths), size[0], size[1], channels), np.uint8)
    failed = []

    def read(index):
        try:
            images[index] = read_image(paths[index], size, channels)
        except DatasetError as error:
            failed.append((paths[index], str(error)))

    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        iterator = pool.map(read, range(len(paths)))
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(paths), desc="reading images", unit="img", leave=False)
        for _ in iterator:
            pass
    return images, sorted(failed)


def drop_unusable(folder, failed, min_images_per_class=2):
    """Removes unreadable files and then classes with too few images, warning about both.

    Returns:
        `(folder, keep)`: the remaining `ImageFolder` and the boolean mask of kept images.
    """
    keep = np.ones(len(folder), bool)
    if failed:
        bad = {path for path, _ in failed}
        keep &= np.array([p not in bad for p in folder.paths])
        shown = "; ".join(reason for _, reason in failed[:5])
        warnings.warn(f"skipped {len(failed)} unreadable image(s) in {folder.root}: {shown}"
                      + (" ..." if len(failed) > 5 else ""), stacklevel=2)
    counts = np.bincount(folder.labels[keep], minlength=len(folder.class_names))
    small = np.flatnonzero(counts < min_images_per_class)
    if len(small):
        keep &= ~np.isin(folder.labels, small)
        names = ", ".join(folder.class_names[i] for i in small[:5])
        warnings.warn(f"excluded {len(small)} class(es) of {folder.root} with fewer than "
                      f"{min_images_per_class} readable images: {names}"
                      + (" ..." if len(small) > 5 else ""), stacklevel=2)
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
