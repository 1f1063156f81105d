"""Classifying image files against a gallery: what `test.py` does, callable from Python.

A gallery is a `Gallery` (`embedding_net.inference.gallery.open_gallery`: an `.npz` encodings file
or an `.enidx` index file) or, as before, loaded `Encodings`; answers come from the gallery's
index, from neighbours only, so a million-image gallery never builds a [queries x classes] matrix.
"""

import os

import numpy as np

from embedding_net.atomic import atomic_write_csv
from embedding_net.data.images import IMAGE_EXTENSIONS, read_image
from embedding_net.inference.encodings import embed_images, model_image_shape
from embedding_net.inference.gallery import as_gallery
from embedding_net.errors import DatasetError

UNKNOWN = "unknown"


def collect_image_paths(inputs):
    """Expands files and folders (searched recursively, sorted) into a list of image paths.

    Raises:
        DatasetError: an input does not exist, or a folder holds no image.
    """
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(item)
                for name in names
                if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise DatasetError(f"no images in folder {item}")
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise DatasetError(f"image not found: {item}")
    return paths


def predict_paths(model, gallery, paths, top_k=5, threshold=None, batch_size=256, rejection="stored"):
    """Classifies image files by their nearest classes in `gallery`.

    Args:
        model: the embedding model the gallery was made with.
        gallery: a `Gallery` (see `open_gallery`) or `Encodings`.
        paths: image files; each is read at the model's input size.
        top_k: how many nearest classes to report.
        threshold: a distance above which the nearest class is not trusted and the prediction
            is `unknown`; None trusts every prediction.
        rejection: `"stored"`: also answer `unknown` beyond the nearest class's radius, as
            calibrated in the gallery's metadata when it has one (`embedding_net.inference.rejection`);
            None: by `threshold` alone; or a calibration dict.

    Returns:
        One dict per image: `path`, `prediction`, `distance` and `nearest` (a list of
        `(class_name, distance)`, nearest first).

    Raises:
        DatasetError: an image cannot be read (the message names it).
    """
    height, width, channels = model_image_shape(model)
    gallery = as_gallery(gallery)
    if isinstance(rejection, str):
        if rejection != "stored":
            raise ValueError(f"`rejection` must be 'stored', None or a calibration dict. Received: {rejection!r}")
        rejection = gallery.rejection
    rows = []
    for begin in range(0, len(paths), batch_size):
        chunk = paths[begin : begin + batch_size]
        images = np.stack([read_image(p, (height, width), channels) for p in chunk])
        answers = gallery.classify(embed_images(model, images, batch_size), top_k, threshold, rejection)
        rows += [dict(answer, path=path) for path, answer in zip(chunk, answers)]
    return rows


def write_predictions_csv(path, rows):
    """Writes one row per image: path, predicted class, distance, then the top-k as
    `class:distance` separated by `;`. Written atomically."""
    atomic_write_csv(path, ["path", "prediction", "distance", "top_k"], [
        [row["path"], row["prediction"], f"{row['distance']:.6f}",
         ";".join(f"{name}:{dist:.6f}" for name, dist in row["nearest"])] for row in rows])


def evaluate_folder(model, encodings, folder, knn_k=5, batch_size=256):
    """Metrics of a labelled folder `folder/<class>/<image>` against `encodings`.

    Images of classes absent from the encodings cannot be classified correctly; they are left
    out and counted in `images_of_unknown_classes`.

    Returns:
        The flat metrics dict of `embedding_net.evaluation.scoring.score_split` (query vs reference).

    Raises:
        DatasetError: the folder is unusable, or none of its classes is in the encodings.
    """
    from embedding_net.inference.encodings import enroll_folder
    from embedding_net.evaluation.scoring import score_split

    queries = enroll_folder(model, folder, batch_size)
    index = {name: i for i, name in enumerate(encodings.class_names)}
    mapped = np.array([index.get(queries.class_names[label], -1) for label in queries.labels])
    known = mapped >= 0
    if not known.any():
        raise DatasetError(f"none of the classes of {folder} is in the encodings")
    metrics, _ = score_split(queries.embeddings[known], mapped[known],
                             (encodings.embeddings, encodings.labels),
                             encodings.metadata.get("distance", "euclidean"), knn_k, episodes=0)
    metrics["images_of_unknown_classes"] = int(np.sum(~known))
    return metrics
