"""`save_index` / `load_index`: an `EmbeddingIndex` to and from one checked file.

The file layout (one file, atomic replace, SHA-256 of every part) is in
`embedding_net.index.container`. The manifest records what a loader must check before trusting
the neighbours an index returns: the format version, the backend and its options, the distance,
the dimension, the number of images, the class names, and `model_sha256`, the SHA-256 of the model
file that made the embeddings (given by the caller; None when unknown). `metadata` is the caller's
JSON object (what an `.npz` encodings file holds: threshold, distance, model path, ...); a loaded
index has it as `index.metadata`, and the recorded hash as `index.model_sha256`. Embeddings of another
model live in another space: searching them would give confident nonsense, so a loader that
knows its model passes `expect_model_sha256` and gets an error instead.

Blobs: `labels` (int64, -1 for removed images), `paths` (UTF-8 JSON list, when kept) and the
backend's own, prefixed `backend.` (exact: the float32 vectors and their half squared norms,
memory-mapped on load; hnsw: the faiss index; usearch: the usearch index, viewed in place).
"""

import json

import numpy as np

from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.container import read_container, write_container
from embedding_net.index.errors import IndexFileError, file_error
from embedding_net.index.locking import exclusive_lock
from embedding_net.index.registry import get_backend

FORMAT_NAME = "embedding_net.index"


def save_index(index, path, model_sha256=None, lock_timeout=60.0, metadata=None):
    """Writes `index` to `path` atomically, under the writer's lock (`exclusive_lock`).

    Args:
        index: an `EmbeddingIndex`.
        path: the index file; replaced whole, or left as it was if anything fails.
        model_sha256: hex SHA-256 of the model file that made the embeddings, or None.
        lock_timeout: seconds to wait for another writer (see `exclusive_lock`).
        metadata: a JSON-serialisable dict stored in the manifest; None stores `index.metadata`.
    """
    metadata = dict(getattr(index, "metadata", {}) if metadata is None else metadata)
    manifest = {"format": FORMAT_NAME, "backend": index.backend,
                "backend_options": index.backend_options, "distance": index.distance,
                "dimension": index.dimension, "count": index.count, "stored": index.stored,
                "class_names": list(index.class_names), "model_sha256": model_sha256,
                "has_paths": index.paths is not None, "metadata": metadata}
    blobs = {"labels": np.asarray(index.labels, np.int64)}
    if index.paths is not None:
        blobs["paths"] = json.dumps(list(index.paths), ensure_ascii=False).encode("utf-8")
    blobs.update({f"backend.{name}": value
                  for name, value in index._backend.blobs().items()})
    with exclusive_lock(path, timeout=lock_timeout):
        write_container(path, manifest, blobs)


def read_manifest(path, verify=False):
    """The manifest of the index file at `path` (checksums of the data verified if `verify`)."""
    return read_container(path, verify=verify)[0]


def load_index(path, expect_model_sha256=None, expect_dimension=None, expect_distance=None,
               mmap=True, verify=True):
    """The `EmbeddingIndex` saved at `path`, after checking that it can be trusted.

    Args:
        path: an index file written by `save_index`.
        expect_model_sha256: the SHA-256 of the model that will embed the queries, or None to
            skip the check.
        expect_dimension: the model's embedding size, or None.
        expect_distance: the distance the caller means, or None.
        mmap: map large arrays (the exact backend's vectors, the usearch graph) instead of
            reading them into memory.
        verify: check the SHA-256 of every blob (one sequential read of the file).

    Raises:
        IndexFileError: missing, truncated or corrupted file, checksum mismatch, another format
            version, or another model, dimension or distance than expected (one line, naming
            the file).
    """
    manifest, blobs = read_container(path, verify=verify)
    try:
        if manifest.get("format") != FORMAT_NAME:
            raise file_error(path, f"not an embedding_net index (format {manifest.get('format')!r})")
        _check_expectations(path, manifest, expect_model_sha256, expect_dimension, expect_distance)
        try:
            backend_class = get_backend(manifest["backend"])
        except ValueError as error:
            raise file_error(path, f"made with a backend this installation lacks: {error}") from None
        labels = blobs.array("labels", mmap=False)
        names = list(manifest["class_names"])
        if labels.shape != (manifest["stored"],) or (len(labels) and labels.max() >= len(names)):
            raise file_error(path, "labels do not match the manifest")
        paths = json.loads(blobs.bytes("paths").decode("utf-8")) if manifest["has_paths"] else None
        if paths is not None and len(paths) != len(labels):
            raise file_error(path, "paths do not match the manifest")
        backend = backend_class.from_blobs(
            int(manifest["dimension"]), manifest["distance"], manifest["backend_options"],
            _Prefixed(blobs, "backend."), mmap)
        if backend.size != len(labels):
            raise file_error(path, f"the {manifest['backend']} data holds {backend.size} vectors, "
                                   f"the manifest {len(labels)}")
        index = EmbeddingIndex.from_parts(backend, labels, names, paths)
        index.metadata = dict(manifest.get("metadata") or {})
        index.model_sha256 = manifest.get("model_sha256")
        return index
    except IndexFileError:
        raise
    except Exception as error:  # a backend's own reader failing on damaged data
        raise file_error(path, f"unreadable ({type(error).__name__}: {error})") from None


def _check_expectations(path, manifest, model_sha256, dimension, distance):
    recorded = manifest.get("model_sha256")
    if model_sha256 is not None and recorded != model_sha256:
        made = "records no model" if recorded is None else f"was made by model {recorded[:12]}"
        raise file_error(path, f"{made}, not by the given model {model_sha256[:12]}: re-embed "
                               "the gallery with this model (build a new index)")
    if dimension is not None and int(manifest["dimension"]) != int(dimension):
        raise file_error(path, f"holds {manifest['dimension']}-dimensional embeddings, the model "
                               f"makes {dimension}-dimensional ones")
    if distance is not None and manifest["distance"] != distance:
        raise file_error(path, f"was built for distance {manifest['distance']!r}, not "
                               f"{distance!r}")


class _Prefixed:
    """The blobs of one backend, by their names without the `backend.` prefix."""

    def __init__(self, blobs, prefix):
        self._blobs, self._prefix = blobs, prefix

    def __getattr__(self, method):
        call = getattr(self._blobs, method)
        return lambda name, *args, **kwargs: call(self._prefix + name, *args, **kwargs)
