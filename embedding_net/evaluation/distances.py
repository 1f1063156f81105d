"""Distances between embeddings in NumPy, by name: `register_distance`, `get_distance`,
`list_distances`.

These names are the project's distances everywhere: the losses and mining compute the same
definitions in `keras.ops` (`embedding_net.mining.distances`, tested equal to these), and the
config's `loss.distance` is checked against `list_distances()`. The registry lives here, on
the NumPy side, so that classification at test time never imports TensorFlow.

- `euclidean`: ||a - b||.
- `squared_euclidean`: ||a - b||^2.
- `cosine`: 1 - cos(a, b), norms floored at 1e-6 so that a zero vector is at distance 1.
"""

import numpy as np

from embedding_net.registry import Registry

_DISTANCES = Registry("distance")
register_distance = _DISTANCES.register


def get_distance(name):
    """The distance class registered as `name` (its `matrix` and `paired` functions)."""
    return _DISTANCES.get(name)


def list_distances():
    """The registered distance names, sorted."""
    return _DISTANCES.names()


def check_distance(distance):
    """Raises a `ValueError` echoing `distance` unless it names a registered distance."""
    if distance not in _DISTANCES:
        raise ValueError(f"`distance` must be one of {', '.join(list_distances())}. Received: {distance!r}")


def squared_norms(vectors):
    """float32 [N] squared L2 norms of the rows of [N, D], without a temporary copy."""
    vectors = np.asarray(vectors, np.float32)
    return np.einsum("ij,ij->i", vectors, vectors)


def unit_rows(vectors, floor=1e-12):
    """Rows scaled to length 1 (norms floored at `floor`, so a zero row stays zero), float32."""
    vectors = np.asarray(vectors)
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), floor)).astype(np.float32)


@register_distance("squared_euclidean", settings=())
class SquaredEuclidean:
    @staticmethod
    def matrix(queries, references, reference_squared_norms):
        squared = squared_norms(queries)[:, None] - 2.0 * (queries @ references.T) + reference_squared_norms[None, :]
        return np.maximum(squared, 0.0, out=squared)

    @staticmethod
    def paired(a, b):
        return np.sum((a - b) ** 2, axis=1)


@register_distance("euclidean", settings=())
class Euclidean:
    @staticmethod
    def matrix(queries, references, reference_squared_norms):
        squared = SquaredEuclidean.matrix(queries, references, reference_squared_norms)
        return np.sqrt(squared, out=squared)

    @staticmethod
    def paired(a, b):
        return np.sqrt(SquaredEuclidean.paired(a, b))


@register_distance("cosine", settings=())
class Cosine:
    @staticmethod
    def matrix(queries, references, reference_squared_norms):
        products = queries @ references.T
        products /= np.maximum(np.sqrt(squared_norms(queries)), 1e-6)[:, None]
        products /= np.maximum(np.sqrt(reference_squared_norms), 1e-6)[None, :]
        return np.maximum(1.0 - products, 0.0, out=products)

    @staticmethod
    def paired(a, b):
        # The 1e-6 norm floor of `matrix`, so that zero vectors agree.
        return np.maximum(1.0 - np.sum(unit_rows(a, 1e-6) * unit_rows(b, 1e-6), axis=1), 0.0)


def distance_matrix(queries, references, distance="euclidean", reference_squared_norms=None):
    """float32 [Q, N] distances between rows.

    `reference_squared_norms` [N] (`squared_norms(references)`) may be given to save a pass over
    the references, which dominates the cost of a single query against many references.
    """
    check_distance(distance)
    queries = np.asarray(queries, np.float32)
    references = np.asarray(references, np.float32)
    if reference_squared_norms is None:
        reference_squared_norms = squared_norms(references)
    return get_distance(distance).matrix(queries, references, reference_squared_norms)


def paired_distances(a, b, distance="euclidean"):
    """float32 [P]: distance between row i of `a` and row i of `b`, defined as in
    `distance_matrix` (which would compute all P x P pairs to get these P)."""
    check_distance(distance)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return get_distance(distance).paired(a, b).astype(np.float32)
