"""The `hnsw` backend: faiss's `IndexHNSWFlat`, a navigable small-world graph over float32 vectors.

The vectors are stored once, inside the faiss index (`IndexFlat` storage, read back without a copy
through `rev_swig_ptr`); no second float32 copy is kept. Cosine is searched as inner product of
unit vectors, the Euclidean distances as squared L2, converted to the index's units.

Defaults (measured by `bench/search.py` on 2 cores, 1,000,000 x 128 clustered unit vectors):
`m=16` links a node (the level-0 links cost 2 x 16 x 4 bytes a vector, a quarter of a 128-d
float32 vector: m=32 would break the 1.5x memory budget); `ef_construction=32` (the build is
most of the cost at a million and must stay under two minutes on two cores: 32 instead of faiss's
40 built 18% faster at 200,000 with the same recall@10, 0.9995 against 1.0); `ef_search=64`,
raised to 2k for a larger k (a search ef below k returns fewer than k neighbours, and the tail
of a long list is the least accurate). At a million: p50 0.15 ms a query, recall@10 0.997, build 110 s.

Where the noise fills all 128 dimensions (`bench/search.py --intrinsic 128`, class clusters as
isolated islands: the worst case of every graph index), recall@10 at a million was only 0.84 at
ef_search 64, 0.91 at 128 and 0.93 at 256 (0.7 ms), with the same numbers from usearch: there,
use `exact`, or raise `ef_search` and check `recall_against_exact` on a sample of queries.

`reserve` (`EmbeddingIndex(capacity=...)`) grows faiss's storage and level-0 links to their
final size before the first add: faiss grows them by doubling otherwise, and at the last
doubling holds the old and the new copy (bare faiss streamed a million vectors at a peak of 1.95x
their raw size, this backend with `capacity` at 1.45x).

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

    def __init__(self, dimension, distance, m=16, ef_construction=32, ef_search=64, index=None):
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

    def reserve(self, count):
        # faiss grows its vector storage and level-0 links by doubling std::vectors, which holds
        # the old and the new array at once. Growing them to `count` and back keeps the capacity.
        faiss = _faiss()
        storage = faiss.downcast_index(self._index.storage)
        links = self._index.hnsw.neighbors
        for table, size in ((storage.codes, int(count) * storage.code_size),
                            (links, int(count) * (2 * self.m + 2))):  # level 0 + upper levels
            current = table.size()
            if size > current:
                table.resize(size)
                table.resize(current)

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
