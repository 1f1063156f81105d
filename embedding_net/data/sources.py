"""Data sources beside class folders: CSV annotation files, and val splits made per class.

A CSV annotation file has a header row and one image per row: a path relative to a root folder
and a label (the class name, any text). `read_csv_annotations` turns it into the same
`ImageFolder` that `scan_image_folder` makes of `<split>/<class>/<image>`, and `split_by_class`
makes a seeded train/val split of either when the data has no `val/` folder.
"""

import csv
import io
import os
import re
import warnings
import zlib

import numpy as np

from embedding_net.data.folders import ImageFolder, listing, scan_image_folder
from embedding_net.errors import DatasetError

_DRIVE_OR_UNC = re.compile(r"^([A-Za-z]:|[\\/]{2})")  # C:\x, C:/x, \\server\share


def _relative_path(text):
    """`text` as a normalised relative path with `/` separators; ValueError when it is not one."""
    if not text:
        raise ValueError("empty path")
    if text.startswith(("/", "\\")) or _DRIVE_OR_UNC.match(text):
        raise ValueError(f"absolute path {text!r} refused: paths must be relative to the root")
    parts = [part for part in text.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {text!r} refused: '..' is not allowed in paths")
    if not parts:
        raise ValueError(f"path {text!r} names no file")
    return "/".join(parts)


def _read_text(csv_path):
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DatasetError(f"annotation file not found: {csv_path}") from None
    except UnicodeDecodeError as error:
        raise DatasetError(f"{csv_path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
    except OSError as error:
        raise DatasetError(f"cannot read annotation file {csv_path}: {error.strerror or error}") from None


def read_csv_annotations(csv_path, root=None, path_column="path", label_column="label",
                         split_column=None, split=None):
    """Reads a CSV annotation file into an `ImageFolder` (sorted class names, labels grouped).

    The file is UTF-8 (a BOM is fine), separated by commas, semicolons or tabs (whichever the
    header holds most of), with a header row naming its columns; other columns are ignored.
    Paths are data, never commands: absolute paths and `..` are refused; `\\` separators (from
    Windows) are read as `/`. Surrounding spaces of paths and labels are ignored.

    Args:
        csv_path: the annotation file.
        root: the folder the paths are relative to; None: the CSV's own folder.
        path_column, label_column: the header names of the image path and label columns.
        split_column, split: when given, only the rows whose `split_column` value is `split`
            (e.g. a column `split` holding `train` or `val`).

    Returns:
        An `ImageFolder` with `root` as root. A row repeating an earlier path and label is
        dropped with one warning; listed files that do not exist are skipped with one warning.

    Raises:
        DatasetError: naming the file (and the line): missing file or root, missing column (with
            the columns found), empty label or path, absolute or `..` path, a path given two
            labels, or no image left.
    """
    root = os.path.dirname(os.path.abspath(csv_path)) if root is None else root
    text = _read_text(csv_path)
    if not os.path.isdir(root):
        raise DatasetError(f"root folder of {csv_path} not found: {root}")
    header_line = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=header_line.count)
    rows = csv.reader(io.StringIO(text), delimiter=delimiter, skipinitialspace=True, strict=True)
    try:
        header = [name.strip() for name in next(rows, [])]
        if not any(header):
            raise DatasetError(f"{csv_path} is empty: expected a header row naming the columns "
                               f"{path_column!r} and {label_column!r}")
        wanted = {"path_column": path_column, "label_column": label_column}
        if split_column is not None:
            wanted["split_column"] = split_column
        for argument, name in wanted.items():
            if name not in header:
                raise DatasetError(f"{csv_path} has no column {name!r} ({argument}); "
                                   f"columns found: {', '.join(map(repr, header))}")
        path_index, label_index = header.index(path_column), header.index(label_column)
        split_index = header.index(split_column) if split_column is not None else None
        needed = max(path_index, label_index, -1 if split_index is None else split_index) + 1
        first_line, duplicates, split_values = {}, [], set()
        for row in rows:
            where = f"{csv_path}, line {rows.line_num}"
            if not any(field.strip() for field in row):
                continue
            if len(row) < needed:
                raise DatasetError(f"{where}: {len(row)} field(s), expected {len(header)} as in the header")
            if split_index is not None:
                split_values.add(row[split_index].strip())
                if row[split_index].strip() != split:
                    continue
            label = row[label_index].strip()
            if not label:
                raise DatasetError(f"{where}: empty label in column {label_column!r}")
            try:
                path = _relative_path(row[path_index].strip())
            except ValueError as error:
                raise DatasetError(f"{where}: {error}") from None
            if path in first_line:
                earlier_label, earlier_line = first_line[path]
                if earlier_label != label:
                    raise DatasetError(f"{where}: {path!r} is labelled {label!r} here and {earlier_label!r} "
                                       f"on line {earlier_line}; an image has one label")
                duplicates.append(str(rows.line_num))
                continue
            first_line[path] = (label, rows.line_num)
    except csv.Error as error:
        raise DatasetError(f"{csv_path}, line {rows.line_num}: not valid CSV: {error}") from None
    if duplicates:
        warnings.warn(f"dropped {len(duplicates)} duplicate row(s) of {csv_path} (same path and label "
                      f"as an earlier row) on line(s) {listing(duplicates)}", stacklevel=2)
    if not first_line:
        if split_index is not None:
            raise DatasetError(f"{csv_path} has no row with {split_column} {split!r}; values found: "
                               f"{', '.join(map(repr, sorted(split_values))) or 'none'}")
        raise DatasetError(f"{csv_path} lists no images")
    missing = [p for p in first_line if not os.path.isfile(os.path.join(root, *p.split("/")))]
    if len(missing) == len(first_line):
        raise DatasetError(f"none of the {len(missing)} images listed in {csv_path} exist under {root}, "
                           f"e.g. {missing[0]}")
    if missing:
        warnings.warn(f"skipped {len(missing)} image(s) listed in {csv_path} but not found under "
                      f"{root}: {listing(sorted(missing))}", stacklevel=2)
        for path in missing:
            del first_line[path]
    class_names = sorted({label for label, _ in first_line.values()})
    index = {name: i for i, name in enumerate(class_names)}
    entries = sorted((index[label], path) for path, (label, _) in first_line.items())
    return ImageFolder(root, [os.path.join(root, *path.split("/")) for _, path in entries],
                       np.array([label for label, _ in entries], np.int32), class_names)


def split_by_class(folder, val_ratio, seed=0):
    """Splits every class of `folder` into train and val images, with a seed.

    A class of `n` images gives `min(n - 1, round(n * val_ratio))` images to val, rounding
    halves up (so 0.25 of 2 images is 1): every class keeps at least one train image, a class of
    one image stays in train, and a small ratio can leave small classes without val images.
    Which images go is a permutation seeded by `seed` and the class name, so the split of a
    class does not change when other classes are added or removed.

    Args:
        folder: an `ImageFolder`.
        val_ratio: the fraction of each class for val, in (0, 1).
        seed: a non-negative integer.

    Returns:
        `(train, val)` `ImageFolder`s in the order of `folder`; the classes of val are a subset
        of those of train (val may have none).
    """
    if not 0 < val_ratio < 1:
        raise ValueError(f"`val_ratio` must be between 0 and 1 (exclusive). Received: {val_ratio}")
    to_val = np.zeros(len(folder), bool)
    order = np.argsort(folder.labels, kind="stable")
    members = np.split(order, np.cumsum(folder.class_counts())[:-1])
    for name, images in zip(folder.class_names, members):
        count = min(len(images) - 1, int(np.floor(len(images) * val_ratio + 0.5 + 1e-9)))
        if count > 0:
            rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
            to_val[images[rng.permutation(len(images))[:count]]] = True
    return folder.subset(~to_val), folder.subset(to_val)


def scan_splits(root, train_split="train", val_split="val", csv_path=None, path_column="path",
                label_column="label", split_column=None, val_ratio=None, seed=0):
    """The train split and, when there is one, the val split: `{name: ImageFolder}`.

    Sources, in order: the CSV annotation file `csv_path` (paths relative to `root`; split by
    `split_column` when given, whose values name the splits), else the class folders
    `root/<train_split>` and `root/<val_split>`. Without a val split, `val_ratio` holds out
    that share of every class (`split_by_class`, seeded).
    """
    scanned = {}
    if csv_path is not None:
        for split in (train_split, val_split) if split_column else (train_split,):
            scanned[split] = read_csv_annotations(csv_path, root, path_column, label_column,
                                                  split_column, split if split_column else None)
    else:
        scanned[train_split] = scan_image_folder(os.path.join(root, train_split))
        if os.path.isdir(os.path.join(root, val_split)):
            scanned[val_split] = scan_image_folder(os.path.join(root, val_split))
    if val_split not in scanned and val_ratio is not None:
        train, val = split_by_class(scanned[train_split], val_ratio, seed)
        scanned[train_split] = train
        if len(val):
            scanned[val_split] = val
        else:
            warnings.warn(f"a val_ratio of {val_ratio} holds out no image of any class: no val split",
                          stacklevel=2)
    return scanned
