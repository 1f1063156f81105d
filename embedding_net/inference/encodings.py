"""Encodings: the embeddings of labelled reference images, saved as `.npz` without pickle.

An encodings file holds `embeddings` float32 [N, D], `labels` int32 [N], `class_names` str [C],
`paths` str [N], `centroids` float32 [C, D] (unit-length class means) and `metadata`, a JSON
string (embedding size, distance, input shape, ...). It is read with `allow_pickle=False`, so
loading one can never run code. Nearest-class search over it is `classify`.
"""

import dataclasses
import json
import os
import zipfile

import numpy as np

from embedding_net.atomic import atomic_path
from embedding_net.data.folders import drop_unusable, scan_image_folder
from embedding_net.data.images import read_images
from embedding_net.errors import EncodingsError
from embedding_net.evaluation.distances import list_distances
from embedding_net.evaluation.classification import class_centroids
from embedding_net.evaluation.neighbours import class_distances, nearest_classes
from embedding_net.evaluation.distances import squared_norms
from embedding_net.inference.rejection import calibrate

FORMAT_VERSION = 1
_ARRAYS = ("embeddings", "labels", "class_names", "paths", "centroids", "metadata")


@dataclasses.dataclass
class Encodings:
    """Reference embeddings with their classes; see the module docstring for the fields."""

    embeddings: np.ndarray
    labels: np.ndarray
    class_names: list
    paths: list
    centroids: np.ndarray
    metadata: dict
    # Squared L2 norms of `embeddings`, filled by the first `classify` call; never saved.
    squared_norms: np.ndarray = dataclasses.field(default=None, repr=False, compare=False)


def make_encodings(embeddings, labels, class_names, paths, metadata=None):
    """Bundles arrays into `Encodings` sorted by class (stable), computing the centroids."""
    labels = np.asarray(labels, np.int32)
    order = np.argsort(labels, kind="stable")
    embeddings, labels = np.asarray(embeddings, np.float32)[order], labels[order]
    paths = [paths[i] for i in order]
    metadata = dict(metadata or {})
    metadata.update({"format_version": FORMAT_VERSION, "embedding_size": int(embeddings.shape[1]),
                     "num_images": int(len(labels)), "num_classes": len(class_names)})
    return Encodings(embeddings, labels, list(class_names), [str(p) for p in paths],
                     class_centroids(embeddings, labels, len(class_names)), metadata)


def save_encodings(path, encodings):
    """Writes `encodings` to `path` (.npz) atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(
                handle,
                embeddings=encodings.embeddings,
                labels=encodings.labels,
                class_names=np.array(encodings.class_names, dtype=str),
                paths=np.array(encodings.paths, dtype=str),
                centroids=encodings.centroids,
                metadata=np.array(json.dumps(encodings.metadata)),
            )


def load_encodings(path):
    """Reads an encodings file safely (no pickle) and checks its arrays agree.

    Raises:
        EncodingsError: missing file, not an encodings file, pickled content, inconsistent arrays.
    """
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise EncodingsError(f"{path} is not an encodings file (.npz)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in _ARRAYS if name not in npz.files]
            if missing:
                raise EncodingsError(f"{path} is not an encodings file: missing {', '.join(missing)}")
            arrays = {name: npz[name] for name in _ARRAYS}
    except FileNotFoundError:
        raise EncodingsError(f"encodings file not found: {path}") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, EncodingsError):
            raise
        if "allow_pickle" in str(error):
            raise EncodingsError(f"{path} holds pickled objects; refusing to load it") from None
        raise EncodingsError(f"{path} is not a readable .npz encodings file: {error}") from None
    return _validated(path, arrays)


def _validated(path, arrays):
    """Checks dtypes and shapes of the loaded arrays; a crafted file fails here, cleanly."""
    embeddings, labels, centroids = arrays["embeddings"], arrays["labels"], arrays["centroids"]
    class_names, paths = arrays["class_names"], arrays["paths"]
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise EncodingsError(f"{path}: embeddings must be a 2-D float array")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise EncodingsError(f"{path}: labels must be a 1-D integer array")
    if class_names.ndim != 1 or paths.ndim != 1 or class_names.dtype.kind != "U" or paths.dtype.kind != "U":
        raise EncodingsError(f"{path}: class_names and paths must be 1-D string arrays")
    if len(labels) != len(embeddings) or len(paths) != len(labels):
        raise EncodingsError(f"{path}: embeddings, labels and paths do not have matching lengths")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise EncodingsError(f"{path}: labels refer to classes outside class_names")
    if centroids.shape != (len(class_names), embeddings.shape[1]) or not np.issubdtype(centroids.dtype, np.floating):
        raise EncodingsError(f"{path}: centroids must be a float array [classes, embedding size]")
    try:
        metadata = json.loads(str(arrays["metadata"]))
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise EncodingsError(f"{path}: metadata must be a JSON object")
    if metadata.get("distance", "euclidean") not in list_distances():
        raise EncodingsError(f"{path}: unknown distance {metadata['distance']!r} in metadata")
    return Encodings(embeddings.astype(np.float32), labels.astype(np.int32), [str(n) for n in class_names],
                     [str(p) for p in paths], centroids.astype(np.float32), metadata)


def embed_images(model, images, batch_size=256):
    """Embeds uint8 images [N, H, W, C] with `model`, returning float32 [N, D].

    Batch by batch through `predict_on_batch` (one compiled call each): `model.predict` first
    builds a `tf.data` pipeline over the array, which took as long as embedding 256 conv4
    images and made ResNet50 a third slower (`python bench/backbones.py`).
    """
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    if not hasattr(model, "predict_on_batch"):  # the LiteRT copy batches in its own `predict`
        return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), np.float32)
    return np.concatenate([np.asarray(model.predict_on_batch(images[begin : begin + batch_size]), np.float32)
                           for begin in range(0, len(images), batch_size)])


def embed_folder_images(model, folder, images=None, batch_size=256):
    """Embeddings of every image of an `ImageFolder`: from `images` when decoded in memory, else
    read from disk in chunks of 16 batches, so memory stays bounded whatever the folder size."""
    if images is not None:
        return embed_images(model, images, batch_size)
    height, width, channels = model_image_shape(model)
    chunk = 16 * batch_size
    parts = []
    for begin in range(0, len(folder), chunk):
        block, _ = read_images(folder.paths[begin : begin + chunk], (height, width), channels)
        parts.append(embed_images(model, block, batch_size))
    return np.concatenate(parts) if parts else np.zeros((0, model.output_shape[-1]), np.float32)


def reference_encodings(parts, max_per_class=None, metadata=None, held_out=()):
    """`Encodings` of several embedded folders (e.g. the train and val splits), merged by class
    name, keeping at most `max_per_class` images of each class of each folder: a run's gallery,
    so its metadata gets the class radii that answer "unknown" (`rejection.calibrate`).

    Args:
        parts: a list of `(ImageFolder, embeddings [N, D])`.
        max_per_class: the cap per class and folder, or None for every image.
        metadata: the JSON-serialisable dict stored with them.
        held_out: `(ImageFolder, embeddings)` of images left out of the gallery (a val split of
            the same classes), which calibrate the radii's scale better than the gallery's own
            training images do; images of classes outside the gallery are ignored.
    """
    embeddings, paths, names = [], [], []
    for folder, embedded in parts:
        keep = np.ones(len(folder), bool)
        if max_per_class is not None:
            # Images of a class are contiguous in an ImageFolder: rank = position within its class.
            rank = np.arange(len(folder)) - np.searchsorted(folder.labels, folder.labels)
            keep = rank < max_per_class
        embeddings.append(embedded[keep])
        paths.extend(p for p, k in zip(folder.paths, keep) if k)
        names.extend(folder.class_names[label] for label in folder.labels[keep])
    class_names = sorted(set(names))
    index = {name: i for i, name in enumerate(class_names)}
    encodings = make_encodings(np.concatenate(embeddings), [index[n] for n in names], class_names, paths, metadata)
    extra, extra_labels = [], []
    for folder, embedded in held_out:
        found = [folder.class_names[label] for label in folder.labels]
        known = np.array([name in index for name in found], bool)
        extra.append(np.asarray(embedded)[known])
        extra_labels += [index[name] for name in found if name in index]
    rejection = calibrate(encodings.embeddings, encodings.labels, class_names,
                          encodings.metadata.get("distance", "euclidean"),
                          held_out=(np.concatenate(extra), np.array(extra_labels, np.int64)) if extra else None)
    if rejection is not None:
        encodings.metadata["rejection"] = rejection
    return encodings


def model_image_shape(model):
    """(height, width, channels) of the raw images `model` takes."""
    return tuple(int(d) for d in model.input_shape[1:])


def enroll_folder(model, folder, batch_size=256, max_per_class=None, metadata=None):
    """Embeds a labelled folder `folder/<class>/<image>` into `Encodings`.

    Classes with one image are fine: enrolment is how new classes are recognised without
    retraining. Unreadable files are skipped with a warning.
    """
    images_folder = scan_image_folder(folder, min_images_per_class=1)
    if max_per_class is not None:
        keep = np.concatenate([np.arange(c) < max_per_class for c in images_folder.class_counts()])
        images_folder = images_folder.subset(keep)
    height, width, channels = model_image_shape(model)
    images, failed = read_images(images_folder.paths, (height, width), channels)
    images_folder, keep = drop_unusable(images_folder, failed, min_images_per_class=1)
    embeddings = embed_images(model, images[keep], batch_size)
    return make_encodings(embeddings, images_folder.labels, images_folder.class_names,
                          images_folder.paths, metadata)


def check_compatible(encodings, model, source="the encodings"):
    """Raises `EncodingsError` unless `encodings` were made with a model of this output size."""
    expected = int(model.output_shape[-1])
    if encodings.embeddings.shape[1] != expected:
        raise EncodingsError(
            f"{source} hold {encodings.embeddings.shape[1]}-dimensional embeddings but the model "
            f"makes {expected}-dimensional ones: they were made by another model"
        )


def classify(query_embeddings, encodings, top_k=5, distance="euclidean"):
    """The `top_k` nearest classes of each query, by the distance to the class's nearest image.

    Returns:
        One list per query of `(class_name, distance)` pairs, nearest first.
    """
    if encodings.squared_norms is None:  # computed once per loaded file, not once per query
        encodings.squared_norms = squared_norms(encodings.embeddings)
    distances = class_distances(np.asarray(query_embeddings, np.float32), encodings.embeddings,
                                encodings.labels, len(encodings.class_names), distance,
                                reference_squared_norms=encodings.squared_norms)
    ranked = nearest_classes(distances, top_k)
    # Classes without a reference image (only in hand-made encodings) are at +inf: never listed.
    return [[(encodings.class_names[c], float(row[c])) for c in ranks if np.isfinite(row[c])]
            for ranks, row in zip(ranked, distances)]
