"""The three distances of the project, for indexes: names, vector preparation and units.

The names are the registry of `embedding_net.evaluation.distances` and the definitions those
of its `distance_matrix` (tested equal, `tests/index`):

* `euclidean`: |q - x|, not squared;
* `squared_euclidean`: |q - x|^2;
* `cosine`: 1 - cos(q, x), clamped at 0; a zero vector is orthogonal to everything.

Every backend stores *prepared* vectors: as given for the Euclidean distances, scaled to unit
length for cosine (so that cosine is an inner product, the metric faiss and usearch index
natively). Backends search either in squared L2 (`metric == "l2"`) or in inner product
(`metric == "ip"`) and convert their raw scores with `to_distance`, so that every backend returns
the same units as the exact one.
"""

import numpy as np

from embedding_net.evaluation.distances import check_distance, list_distances

DISTANCES = tuple(list_distances())

# The norm floor of `distance_matrix`: a zero vector stays zero instead of becoming NaN.
_NORM_FLOOR = 1e-6


def metric_of(distance):
    """`"ip"` (inner product of unit vectors) for cosine, `"l2"` (squared L2) otherwise."""
    check_distance(distance)
    return "ip" if distance == "cosine" else "l2"


def prepare(vectors, distance, dimension=None, name="embeddings", copy=False):
    """float32 C-contiguous [N, D] vectors as a backend stores and searches them.

    Under cosine the rows are scaled to unit length, in a new array. Under a Euclidean distance
    a float32 C-contiguous array is returned as is unless `copy` (for a backend that keeps the
    very array it is given): one copy at most either way.

    Raises:
        ValueError: not 2-D, the wrong dimension, or not finite.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim == 1 and dimension is not None and vectors.shape[0] == dimension:
        vectors = vectors[None, :]
    if vectors.ndim != 2 or (dimension is not None and vectors.shape[1] != dimension):
        want = f"[N, {dimension}]" if dimension is not None else "[N, D]"
        raise ValueError(f"`{name}` must be {want}. Received shape: {vectors.shape}")
    cosine = metric_of(distance) == "ip"
    vectors = np.array(vectors, dtype=np.float32, order="C", copy=True if copy or cosine else None)
    if not np.isfinite(vectors).all():
        raise ValueError(f"`{name}` holds NaN or infinite values")
    if cosine:
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        vectors /= np.maximum(norms, _NORM_FLOOR)[:, None]
    return vectors


def to_distance(raw, distance, metric):
    """Converts raw backend scores (squared L2, or inner products of unit vectors) to `distance`.

    Inner products become 1 - ip (cosine distance, clamped at 0); squared L2 is clamped at 0 and
    square-rooted for `euclidean`. Missing results (+inf under L2, -inf under inner product)
    come out as +inf.
    """
    raw = np.asarray(raw, np.float32)
    if metric == "ip":
        return np.maximum(1.0 - raw, 0.0)
    squared = np.maximum(raw, 0.0)
    return np.sqrt(squared) if distance == "euclidean" else squared
