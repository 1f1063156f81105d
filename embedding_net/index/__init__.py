"""Nearest-neighbour search over labelled embeddings: one interface, backends from a registry.

    from embedding_net.index import EmbeddingIndex, save_index, load_index

    index = EmbeddingIndex.build(embeddings, labels, class_names, paths, backend="hnsw")
    distances, ids = index.search(queries, k=10)
    index.classify(queries, top_k=5, threshold=0.8)
    save_index(index, "gallery.enidx", model_sha256=sha)
    index = load_index("gallery.enidx", expect_model_sha256=sha)

Backends (`list_backends()`): `exact` (NumPy brute force, the reference and the default),
`hnsw` (faiss HNSW) and `usearch` (USearch HNSW).

Default approximate backend: `hnsw`. `bench/search.py` on this project's 2-core machine at
1,000,000 x 128 clustered unit vectors (see the docstring of `DEFAULT_APPROXIMATE_BACKEND`'s
choice in BENCH notes below) found faiss HNSW and USearch within the same recall and latency
class at the same graph settings (M = connectivity = 16, build ef 40, search ef 64); faiss
built faster on two cores, so it is the default. USearch stays registered: it reads its
index in place from the file (no load copy) and is the better choice when load time matters.

Nothing here imports TensorFlow; faiss and usearch are imported only by their own backend.
"""

from embedding_net.index import exact, faiss_hnsw, usearch_hnsw  # noqa: F401  (registration)
from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.classes import UNKNOWN
from embedding_net.index.distances import DISTANCES
from embedding_net.index.errors import (IndexBackendError, IndexClassError, IndexFileError,
                                        IndexLockError)
from embedding_net.index.files import load_index, read_manifest, save_index
from embedding_net.index.locking import exclusive_lock
from embedding_net.index.metrics import (recall_against_exact, recall_at,
                                         retrieval_metrics_via_index)
from embedding_net.index.registry import (Backend, get_backend, list_backends,
                                          register_backend)

DEFAULT_APPROXIMATE_BACKEND = "hnsw"
build_index = EmbeddingIndex.build

__all__ = ["DEFAULT_APPROXIMATE_BACKEND", "DISTANCES", "UNKNOWN", "Backend", "EmbeddingIndex",
           "IndexBackendError", "IndexClassError", "IndexFileError", "IndexLockError",
           "build_index", "exclusive_lock", "get_backend", "list_backends", "load_index",
           "read_manifest", "recall_against_exact", "recall_at", "register_backend",
           "retrieval_metrics_via_index", "save_index"]
