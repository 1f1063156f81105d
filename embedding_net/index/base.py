"""`EmbeddingIndex`: labelled embeddings behind one interface, whatever the backend.

The backend (from the registry: `exact`, `hnsw`, `usearch`, ...) only stores vectors under
positional ids and finds neighbours. This class adds what is the same for every backend: class
labels (dense ids into `class_names`), optional image paths, adding images and new classes
without a rebuild, removing classes, and class answers computed from neighbours only
(`embedding_net.index.classes`), never from a [queries x classes] matrix.

Removing a class: a backend that `deletes` (exact) drops the vectors, and the ids after them shift
down. Graph backends cannot delete: the removed ids keep their place with label -1 and `search`
filters them out, over-fetching `k / (alive fraction) * 1.5` neighbours and, for the queries still
short of k, four times as many again until k are found or everything stored was fetched. Many
removals slow a graph index down: rebuild it from `vectors` then.

Ids returned by `search` index `labels` and `paths`; they stay valid until the next removal.
"""

import numpy as np

from embedding_net.index import classes as class_answers
from embedding_net.index.distances import check_distance, prepare
from embedding_net.index.errors import IndexBackendError, IndexClassError
from embedding_net.index.registry import get_backend


class EmbeddingIndex:
    """Labelled embeddings searchable by nearest neighbours; see the module docstring."""

    def __init__(self, dimension, distance="euclidean", backend="exact", capacity=None,
                 **backend_options):
        """An empty index. `capacity`: how many images it will hold, when known, so that
        backends allocate once instead of growing (see `Backend.reserve`)."""
        check_distance(distance)
        cls = get_backend(backend)
        try:
            self._backend = cls(dimension=int(dimension), distance=distance, **backend_options)
        except TypeError as error:
            raise IndexBackendError(f"index backend {backend!r} does not take these options "
                                    f"{sorted(backend_options)}: {error}") from None
        self._labels, self._removed = np.zeros(0, np.int64), 0
        self._class_names, self._class_ids, self._paths = [], {}, None
        self._class_counts = None
        self.metadata, self.model_sha256 = {}, None  # what `save_index` / `load_index` carry
        if capacity:
            self._backend.reserve(int(capacity))

    @classmethod
    def build(cls, embeddings, labels, class_names, paths=None, distance="euclidean",
              backend="exact", capacity=None, **backend_options):
        """A new index of `embeddings` [N, D] whose `labels` [N] are ids into `class_names`.

        Every name of `class_names` is a class of the index, even one without images. `paths`
        (N strings, or None) are kept to say which image each neighbour is. `capacity`: the
        number of images the index will hold once more are added, when known.
        """
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"`embeddings` must be [N, D]. Received shape: {embeddings.shape}")
        index = cls(embeddings.shape[1], distance, backend, capacity, **backend_options)
        index._set_class_names(list(class_names))
        index.add(embeddings, labels, paths)
        return index

    @classmethod
    def from_parts(cls, backend, labels, class_names, paths):
        """An index around a loaded `Backend` and its labels (used by `load_index`)."""
        index = cls.__new__(cls)
        index._backend, index._labels = backend, np.asarray(labels, np.int64)
        index._removed = int(np.count_nonzero(index._labels < 0))
        index._set_class_names(list(class_names))
        index._paths = None if paths is None else list(paths)
        index.metadata, index.model_sha256 = {}, None
        return index

    def _set_class_names(self, names):
        self._class_counts = None
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ValueError("`class_names` must be distinct strings")
        self._class_names, self._class_ids = names, {n: i for i, n in enumerate(names)}

    def add(self, embeddings, classes, paths=None):
        """Appends images; `classes` are class names (new ones become new classes) or ids."""
        vectors = prepare(embeddings, self.distance, self.dimension,
                          copy=getattr(self._backend, "keeps_vectors", False))
        ids, new_names = self._class_ids_of(classes, len(vectors))
        if paths is not None and len(paths) != len(vectors):
            raise ValueError(f"{len(paths)} paths for {len(vectors)} embeddings")
        if self.stored and (paths is None) != (self._paths is None):
            raise ValueError("this index keeps image paths: pass `paths`" if paths is None else
                             "this index keeps no image paths: pass `paths=None`")
        self._backend.add(vectors)
        self._labels = np.concatenate([self._labels, ids])
        self._set_class_names(self._class_names + new_names)
        if paths is not None:
            self._paths = (self._paths or []) + [str(p) for p in paths]

    def _class_ids_of(self, classes, count):
        classes = np.asarray(classes)
        if classes.shape != (count,):
            raise ValueError(f"{classes.shape} class labels for {count} embeddings")
        if classes.dtype.kind in "iu":
            if count and (classes.min() < 0 or classes.max() >= len(self._class_names)):
                raise IndexClassError(f"class ids must be in [0, {len(self._class_names)}). "
                                      f"Received: [{classes.min()}, {classes.max()}]")
            return classes.astype(np.int64), []
        if count and classes.dtype.kind not in "UO":
            raise ValueError(f"class labels must be names or integer ids: {classes.dtype}")
        known, new = dict(self._class_ids), []
        for name in dict.fromkeys(str(c) for c in classes):
            if name not in known:
                known[name] = len(self._class_names) + len(new)
                new.append(name)
        return np.array([known[str(c)] for c in classes], np.int64), new

    def remove_class(self, name):
        """Removes class `name` and its images; returns how many images it had."""
        if name not in self._class_ids:
            raise IndexClassError(f"class {name!r} is not in the index")
        c = self._class_ids[name]
        mask = self._labels == c
        if self._backend.deletes:
            self._backend.delete(~mask)
            self._labels = self._labels[~mask]
            if self._paths is not None:
                self._paths = [p for p, gone in zip(self._paths, mask) if not gone]
        else:
            self._labels = self._labels.copy()
            self._labels[mask] = -1
            self._removed += int(mask.sum())
        self._labels = np.where(self._labels > c, self._labels - 1, self._labels)
        self._set_class_names(self._class_names[:c] + self._class_names[c + 1 :])
        return int(mask.sum())

    def search(self, queries, k=10):
        """(float32 distances [Q, k], int64 ids [Q, k]), nearest first; -1 / +inf when fewer
        than k images are left."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"`k` must be an integer >= 1. Received: {k!r}")
        queries = prepare(queries, self.distance, self.dimension, name="queries")
        stored, alive = self.stored, self.count
        if stored == alive:
            return self._backend.search(queries, int(k))
        fetch = min(stored, max(2 * k, int(np.ceil(k * stored / max(alive, 1) * 1.5))))
        distances, ids, short = self._alive_first(*self._backend.search(queries, fetch), k)
        while short.any() and fetch < stored:
            fetch = min(stored, fetch * 4)
            more = self._alive_first(*self._backend.search(queries[short], fetch), k)
            distances[short], ids[short] = more[0], more[1]
            short[np.flatnonzero(short)[~more[2]]] = False
        return distances, ids

    def _alive_first(self, distances, ids, k):
        alive = (ids >= 0) & (self._labels[np.maximum(ids, 0)] >= 0)
        order = np.argsort(~alive, axis=1, kind="stable")[:, :k]
        keep = np.take_along_axis(alive, order, 1)
        distances = np.where(keep, np.take_along_axis(distances, order, 1), np.inf)
        ids = np.where(keep, np.take_along_axis(ids, order, 1), -1)
        if ids.shape[1] < k:
            pad = ((0, 0), (0, k - ids.shape[1]))
            distances = np.pad(distances, pad, constant_values=np.inf)
            ids = np.pad(ids, pad, constant_values=-1)
        return distances.astype(np.float32), ids, keep.sum(axis=1) < min(k, self.count)

    def nearest_classes(self, queries, top_k=5, candidates=None, max_candidates=None):
        """Per query, the `top_k` nearest classes as [(name, distance)], nearest first."""
        return class_answers.nearest_classes(self, queries, top_k, candidates, max_candidates)

    def knn_vote(self, queries, k=5):
        """Per query, the class name voted by its k nearest images."""
        return class_answers.knn_vote(self, queries, k)

    def classify(self, queries, top_k=5, threshold=None):
        """Per query {prediction, distance, nearest}; `unknown` when farther than `threshold`."""
        return class_answers.classify(self, queries, top_k, threshold)

    def vectors(self, ids):
        """float32 [n, D] stored vectors of `ids` (unit length under cosine)."""
        return self._backend.vectors(np.asarray(ids, np.int64))

    backend = property(lambda self: self._backend.name, doc="The registry name of the backend.")
    backend_options = property(lambda self: dict(self._backend.options))
    approximate = property(lambda self: self._backend.approximate)
    dimension = property(lambda self: self._backend.dimension)
    distance = property(lambda self: self._backend.distance)
    stored = property(lambda self: self._backend.size, doc="Images stored, removed ones too.")
    count = property(lambda self: len(self._labels) - self._removed,
                     doc="Images that searches can return.")
    class_names = property(lambda self: tuple(self._class_names))
    paths = property(lambda self: None if self._paths is None else tuple(self._paths))

    @property
    def class_counts(self):
        """int64 [classes]: images of each class that searches can return (cached)."""
        if self._class_counts is None:
            alive = self._labels[self._labels >= 0]
            self._class_counts = np.bincount(alive, minlength=len(self._class_names))
        return self._class_counts

    @property
    def labels(self):
        """int64 [stored] class ids into `class_names`, -1 for a removed image (read-only)."""
        view = self._labels.view()
        view.flags.writeable = False
        return view

    def __repr__(self):
        return (f"EmbeddingIndex(backend={self.backend!r}, distance={self.distance!r}, "
                f"dimension={self.dimension}, count={self.count}, "
                f"classes={len(self._class_names)})")
