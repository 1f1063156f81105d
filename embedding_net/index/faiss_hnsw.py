"""The `hnsw` backend: faiss's `IndexHNSWFlat`, a navigable small-world graph over float32 vectors.

The vectors are stored once, inside the faiss index (`IndexFlat` storage, read back without a copy
through `rev_swig_ptr`); no second float32 copy is kept. Cosine is searched as inner product of
unit vectors, the Euclidean distances as squared L2, converted to the index's units.

Defaults (measured by `bench/search.py` on 2 cores, 1,000,000 x 128 clustered unit vectors):
`M=16` neighbours a node (the graph costs about 2 x M x 4 bytes a vector at level 0, a quarter of
a 128-d float32 vector: M=32 would break the 1.5 x memory budget); `ef_construction=40` (faiss's
default: the build is most of the cost at a million and must stay under two minutes on two cores);
`ef_search=64`, raised to k for a larger k (faiss would otherwise return fewer than k).

faiss has no deletion for HNSW (`deletes = False`): `EmbeddingIndex` filters removed ids out.
faiss uses every core through OpenMP (`faiss.omp_set_num_threads` changes it).
"""

import numpy as np

from embedding_net.index.distances import metric_of, to_distance
from embedding_net.index.registry import Backend, pad_missing, register_backend


def _faiss():
    import faiss  # imported here: the exact backend works without faiss installed

    return faiss


@register_backend("hnsw")
class FaissHNSWBackend(Backend):
    approximate = True
    deletes = False
    keeps_vectors = False  # faiss copies what it is given

    def __init__(self, dimension, distance, m=16, ef_construction=40, ef_search=64, index=None):
        super().__init__(dimension, distance)
        faiss = _faiss()
        self.m, self.ef_construction, self.ef_search = int(m), int(ef_construction), int(ef_search)
        self._metric = metric_of(distance)
        if index is None:
            index = faiss.IndexHNSWFlat(self.dimension, self.m, faiss.METRIC_INNER_PRODUCT
                                        if self._metric == "ip" else faiss.METRIC_L2)
            index.hnsw.efConstruction = self.ef_construction
        self._index = index

    @property
    def options(self):
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}

    @property
    def size(self):
        return int(self._index.ntotal)

    def add(self, vectors):
        if len(vectors):
            self._index.add(vectors)

    def search(self, queries, k):
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, 2 * k)
        raw, ids = self._index.search(queries, k, params=params)
        return pad_missing(to_distance(raw, self.distance, self._metric), ids)

    def _stored(self):
        faiss = _faiss()
        storage = faiss.downcast_index(self._index.storage)
        flat = faiss.rev_swig_ptr(storage.get_xb(), self.size * self.dimension)
        return np.asarray(flat).reshape(self.size, self.dimension)

    def vectors(self, ids):
        return self._stored()[np.asarray(ids, np.int64)] if self.size else np.zeros(
            (0, self.dimension), np.float32)

    def blobs(self):
        def stream(write):  # straight into the file: no second copy of the index in memory
            faiss = _faiss()
            writer = faiss.PyCallbackIOWriter(write)
            faiss.write_index(self._index, writer)
            del writer  # its destructor flushes the last buffer

        return {"faiss": stream}

    @classmethod
    def from_blobs(cls, dimension, distance, options, blobs, mmap):
        faiss = _faiss()
        # Read into memory: graph search touches pages at random, so a memory map saves no RAM
        # once the index is in use, and faiss can map only a file of its own.
        with blobs.reader("faiss") as handle:
            reader = faiss.PyCallbackIOReader(handle.read)
            index = faiss.read_index(reader)
            del reader
        return cls(dimension, distance, index=index, **options)
