"""Galleries: the labelled reference images test.py answers from, whatever file holds them.

Two files hold a gallery:

- an encodings file (`.npz`, `embedding_net.inference.encodings`): the old format, read whole
  into memory and queried through an in-memory `exact` `EmbeddingIndex` built from it, which
  gives today's answers (a class's distance is that of its nearest image);
- an index file (`.enidx`, `embedding_net.index`): the artefact for large galleries, loaded
  memory-mapped and queried through its own backend (`exact`, or `hnsw` / `usearch`,
  approximate). Its manifest holds what the encodings metadata held (threshold, class radii,
  distance, model path) and the SHA-256 of the model file that made it.

Both are queried through the index's class answers, found from neighbours only: a gallery of a
million images never builds a [queries x classes] matrix.

Which backend a new index gets (`choose_backend`): `exact` below `EXACT_UP_TO` images, else
`hnsw`. From `bench/results/search.json` (2 cores, 128-d): exact answers one query in 8 ms at
100,000 images and 53 ms at 1,000,000 (linear in the size beyond ~100,000, so ~11 ms at 200,000),
and builds instantly; hnsw answers in 0.15 ms at any of these sizes but builds in ~8 s per 100,000
images, with recall@10 0.997 at a million. Below 200,000 images exact is still interactive
(< 15 ms a query) and gives the true answer; from there on its cost grows past what a user
waits for, while hnsw's build (~17 s at 200,000) is still short.
"""

import json
import math
import os

import numpy as np
import yaml

from embedding_net.errors import EncodingsError, UserError
from embedding_net.index import (DEFAULT_APPROXIMATE_BACKEND, EmbeddingIndex, exact_copy,
                                 get_backend, load_index, read_manifest, save_index)
from embedding_net.inference.encodings import Encodings, check_compatible, load_encodings
from embedding_net.inference.litert import file_sha256
from embedding_net.inference.rejection import check_rejection, reject

INDEX_SUFFIX = ".enidx"
EXACT_UP_TO = 200_000


def is_index_path(path):
    """Whether `path` names an index file (`.enidx`) rather than an encodings file."""
    return str(path).lower().endswith(INDEX_SUFFIX)


def choose_backend(images, backend=None):
    """`backend` when given (checked against the registry), else `exact` below `EXACT_UP_TO`
    images and `hnsw` from there on (see the module docstring)."""
    if backend is not None:
        get_backend(backend)  # an unknown name fails here, listing the others
        return backend
    return "exact" if images < EXACT_UP_TO else DEFAULT_APPROXIMATE_BACKEND


def run_distance(weights):
    """The distance of the training run of `weights` (its `config.yml`, loss.distance), or None."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(weights)), "config.yml"),
                  encoding="utf-8") as handle:
            config = yaml.safe_load(handle)
        return config["loss"]["distance"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def run_threshold(weights, model_sha256=None):
    """`(threshold, file)`: the verification threshold train.py stored in the gallery it wrote
    beside `weights` (RUN/encodings.enidx, else RUN/encodings.npz), or `(None, None)`.

    An index recording another model's SHA-256 than `model_sha256` (the model was retrained or
    replaced since) is passed over: its threshold was calibrated for another embedding space.
    """
    run = os.path.dirname(os.path.abspath(weights))
    for name in ("encodings.enidx", "encodings.npz"):
        path = os.path.join(run, name)
        try:
            if is_index_path(path):
                manifest = read_manifest(path)
                recorded = manifest.get("model_sha256")
                if recorded and recorded != (model_sha256 or file_sha256(weights)):
                    continue
                metadata = manifest.get("metadata") or {}
            else:
                metadata = _npz_metadata(path)
        except (UserError, OSError, ValueError, KeyError):
            continue  # absent or unreadable: no threshold from it
        threshold = metadata.get("threshold") if isinstance(metadata, dict) else None
        if isinstance(threshold, (int, float)) and math.isfinite(threshold):
            return float(threshold), path
    return None, None


def _npz_metadata(path):
    """The metadata of an encodings file, without reading its arrays."""
    with np.load(path, allow_pickle=False) as npz:
        return json.loads(str(npz["metadata"]))


class Gallery:
    """Labelled reference embeddings behind an `EmbeddingIndex`; see the module docstring."""

    def __init__(self, index, metadata, path, encodings=None):
        self.index, self.metadata, self.path, self.encodings = index, dict(metadata), path, encodings

    @classmethod
    def from_encodings(cls, encodings, path=None):
        """The gallery of loaded `Encodings`: an in-memory exact index of them."""
        index = EmbeddingIndex.build(encodings.embeddings, encodings.labels, encodings.class_names,
                                     encodings.paths, encodings.metadata.get("distance", "euclidean"),
                                     backend="exact")
        index.metadata = dict(encodings.metadata)
        return cls(index, encodings.metadata, path, encodings)

    def classify(self, queries, top_k=5, threshold=None, rejection=None):
        """Per query {prediction, distance, nearest}, `unknown` beyond `threshold` and, when
        `rejection` (a calibration of `embedding_net.inference.rejection`, e.g. `self.rejection`)
        is given, beyond its nearest class's radius."""
        rows = self.index.classify(queries, top_k, threshold)
        return rows if rejection is None else reject(rows, rejection)

    @property
    def rejection(self):
        """The class-radius calibration stored in the metadata (checked), or None."""
        stored = self.metadata.get("rejection")
        if stored is not None:
            check_rejection(stored, self.path or "the gallery")
        return stored

    def nearest_classes(self, queries, top_k=5):
        """Per query the `top_k` nearest `(class_name, distance)`, nearest first."""
        return self.index.nearest_classes(queries, top_k)

    distance = property(lambda self: self.index.distance)
    approximate = property(lambda self: self.index.approximate)
    class_names = property(lambda self: self.index.class_names)
    count = property(lambda self: self.index.count)


def as_gallery(gallery_or_encodings):
    """A `Gallery` of a `Gallery` or of `Encodings` (the old argument of `predict_paths`)."""
    if isinstance(gallery_or_encodings, Encodings):
        return Gallery.from_encodings(gallery_or_encodings)
    return gallery_or_encodings


def open_gallery(path, exact=False, model=None, weights=None):
    """The gallery stored at `path`: an `.npz` encodings file or an `.enidx` index file.

    Args:
        exact: answer exactly even from an approximate index (its vectors copied into an exact
            backend, which costs their size in memory).
        model: the embedding model that will embed the queries: its output size must match.
        weights: its model file: an index that records another model's SHA-256 is refused, and
            one built for another distance than the run's `config.yml` says.

    Raises:
        EncodingsError, IndexFileError: missing, damaged or incompatible file (one line).
    """
    if not is_index_path(path):
        encodings = load_encodings(path)
        if model is not None:
            check_compatible(encodings, model, path)
        return Gallery.from_encodings(encodings, path)
    recorded = read_manifest(path).get("model_sha256")
    index = load_index(path, expect_model_sha256=file_sha256(weights) if recorded and weights else None,
                       expect_dimension=None if model is None else int(model.output_shape[-1]),
                       expect_distance=run_distance(weights) if weights else None, mmap=True)
    if exact and index.approximate:
        index = exact_copy(index)
    return Gallery(index, index.metadata, path)


def save_encodings_index(path, encodings, model_sha256=None, backend=None):
    """Writes `encodings` as an index file (backend by `choose_backend`), its metadata in the
    manifest; returns the `EmbeddingIndex`."""
    if encodings.embeddings.ndim != 2:
        raise EncodingsError("encodings must hold [N, D] embeddings")
    index = EmbeddingIndex.build(encodings.embeddings, encodings.labels, encodings.class_names,
                                 encodings.paths, encodings.metadata.get("distance", "euclidean"),
                                 backend=choose_backend(len(encodings.labels), backend))
    save_index(index, path, model_sha256=model_sha256, metadata=encodings.metadata)
    return index
