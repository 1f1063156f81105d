"""Nearest-neighbour search over labelled embeddings: one interface, backends from a registry.

    from embedding_net.index import EmbeddingIndex, save_index, load_index

    index = EmbeddingIndex.build(embeddings, labels, class_names, paths, backend="hnsw")
    distances, ids = index.search(queries, k=10)
    index.classify(queries, top_k=5, threshold=0.8)
    save_index(index, "gallery.enidx", model_sha256=sha, metadata={"threshold": 0.8})
    index = load_index("gallery.enidx", expect_model_sha256=sha)

Backends (`list_backends()`): `exact` (NumPy brute force: the reference and the default),
`hnsw` (faiss HNSW) and `usearch` (USearch HNSW). `DEFAULT_APPROXIMATE_BACKEND` is `hnsw`.

Why `hnsw`: `bench/search.py --sizes 10000 100000 1000000` on this project's 2-core machine
(Intel Xeon, AVX-512; about one core busy with other processes throughout), 1,000,000 x 128
clustered unit vectors, same graph settings for both (16 links a node, build ef 32, search ef 64),
gave at a million:

    backend   build   p50 one query   batched/query   recall@10   peak memory / raw vectors
    hnsw      110 s   0.15 ms         0.16 ms         0.997       1.45
    usearch   185 s   0.32 ms         0.30 ms         0.995       1.62
    exact     0.6 s   53 ms           7.5 ms          1           1.23

Same recall, but faiss builds 1.7x faster and answers 2x faster on two cores, and its arrays can
be reserved up front (`capacity`), which keeps the build under 1.5x the raw vectors; USearch's
Python API cannot reserve. USearch stays registered: it maps its graph from the index file
without reading it (`load_index(mmap=True)`), the better choice when load time matters most.

Nothing here imports TensorFlow; faiss and usearch are imported only by their own backend.
"""

from embedding_net.index import exact, faiss_hnsw, usearch_hnsw  # noqa: F401  (registration)
from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.classes import UNKNOWN
from embedding_net.index.convert import alive_ids, exact_copy
from embedding_net.index.distances import DISTANCES
from embedding_net.index.errors import (IndexBackendError, IndexClassError, IndexFileError,
                                        IndexLockError)
from embedding_net.index.files import load_index, read_manifest, save_index
from embedding_net.index.locking import exclusive_lock
from embedding_net.index.metrics import (query_metrics_via_index, recall_against_exact,
                                         recall_at, retrieval_metrics_via_index)
from embedding_net.index.registry import (Backend, get_backend, list_backends,
                                          register_backend)

DEFAULT_APPROXIMATE_BACKEND = "hnsw"
build_index = EmbeddingIndex.build

__all__ = ["DEFAULT_APPROXIMATE_BACKEND", "DISTANCES", "UNKNOWN", "Backend", "EmbeddingIndex",
           "IndexBackendError", "IndexClassError", "IndexFileError", "IndexLockError",
           "alive_ids", "build_index", "exact_copy", "exclusive_lock", "get_backend", "list_backends",
           "load_index", "query_metrics_via_index", "read_manifest", "recall_against_exact", "recall_at",
           "register_backend", "retrieval_metrics_via_index", "save_index"]
