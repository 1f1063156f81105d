"""The `usearch` backend: USearch's HNSW graph (`usearch.index.Index`), float32 vectors.

Keys are the positional ids. Cosine is searched as inner product of unit vectors (`ip`, whose
usearch distance is already 1 - ip), the Euclidean distances as `l2sq`, converted to the index's
units. Defaults mirror the `hnsw` backend so that the two are compared like for like:
`connectivity=16`, `expansion_add=32`, `expansion_search=64` (raised to k for a larger k).

A loaded index is a zero-copy `view` of the index file's memory map when `mmap=True`; views are
read-only, so the first `add` copies the graph into memory. usearch could remove keys itself, but
`deletes = False` keeps removal identical to the `hnsw` backend: `EmbeddingIndex` filters removed
ids out of results.
"""

import numpy as np

from embedding_net.index.distances import metric_of, to_distance
from embedding_net.index.registry import Backend, pad_missing, register_backend


def _usearch_index():
    from usearch.index import Index  # imported here: the exact backend works without usearch

    return Index


@register_backend("usearch")
class USearchBackend(Backend):
    approximate = True
    deletes = False
    keeps_vectors = False  # usearch copies what it is given

    def __init__(self, dimension, distance, connectivity=16, expansion_add=32,
                 expansion_search=64, threads=0, index=None, view=False):
        super().__init__(dimension, distance)
        self.connectivity, self.expansion_add = int(connectivity), int(expansion_add)
        self.expansion_search, self.threads = int(expansion_search), int(threads)
        self._metric = metric_of(distance)
        if index is None:
            index = _usearch_index()(ndim=self.dimension, dtype="f32",
                                     metric="ip" if self._metric == "ip" else "l2sq",
                                     connectivity=self.connectivity,
                                     expansion_add=self.expansion_add,
                                     expansion_search=self.expansion_search)
        self._index, self._view = index, view

    @property
    def options(self):
        return {"connectivity": self.connectivity, "expansion_add": self.expansion_add,
                "expansion_search": self.expansion_search, "threads": self.threads}

    @property
    def size(self):
        return int(self._index.size)

    def add(self, vectors):
        if not len(vectors):
            return
        if self._view:  # a read-only view of a file: copy it into memory once
            self._index, self._view = self._index.copy(), False
        keys = np.arange(self.size, self.size + len(vectors), dtype=np.uint64)
        self._index.add(keys, vectors, threads=self.threads)

    def search(self, queries, k):
        self._index.expansion_search = max(self.expansion_search, 2 * k)
        matches = self._index.search(queries, k, threads=self.threads)
        keys = np.asarray(matches.keys, np.int64).reshape(len(queries), -1)[:, :k]
        raw = np.asarray(matches.distances, np.float32).reshape(len(queries), -1)[:, :k]
        # One query gives `Matches` (only what was found), several `BatchMatches` (with counts).
        counts = np.asarray(getattr(matches, "counts", [keys.shape[1]])).reshape(-1, 1)
        keys = np.where(np.arange(keys.shape[1]) < counts, keys, -1)
        if self._metric == "ip":
            raw = 1.0 - raw  # usearch's ip distance is 1 - ip; to_distance expects ip
        distances, ids = pad_missing(to_distance(np.nan_to_num(raw), self.distance,
                                                 self._metric), keys)
        if ids.shape[1] < k:  # fewer stored vectors than k
            pad = k - ids.shape[1]
            distances = np.pad(distances, ((0, 0), (0, pad)), constant_values=np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return distances, ids

    def vectors(self, ids):
        ids = np.asarray(ids, np.uint64)
        if not len(ids):
            return np.zeros((0, self.dimension), np.float32)
        return np.vstack(self._index.get(ids)).astype(np.float32, copy=False)

    def blobs(self):
        return {"usearch": self._index.save()}

    @classmethod
    def from_blobs(cls, dimension, distance, options, blobs, mmap):
        buffer = blobs.buffer("usearch")  # a memoryview of the file's map, kept alive by blobs
        index = _usearch_index().restore(buffer, view=mmap)
        if index is None:
            raise ValueError("usearch cannot read its blob")
        backend = cls(dimension, distance, index=index, view=mmap, **options)
        backend._blobs = blobs  # the view reads the map: keep it open as long as the index
        return backend
