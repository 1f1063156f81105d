"""Pairwise distance matrices between the embeddings of one batch, in `keras.ops`.

Every distance here is a dissimilarity: 0 for identical vectors, larger for vectors farther
apart. Mining and losses work on the B x B matrix these functions return.
"""

from keras import ops

# The names are registered with the NumPy implementations, which must not import TensorFlow;
# `BATCH_DISTANCES` gives each its `keras.ops` form (a test checks that both cover the registry).
from embedding_net.evaluation.distances import check_distance
from embedding_net.mining.rules import itself

# The expansion |a|^2 - 2 a.b + |b|^2 loses about this much, relative to |a|^2 + |b|^2, to
# float32 rounding; anything below it is indistinguishable from an exact duplicate.
_RELATIVE_ROUNDING = 4 * 1.1920929e-07


def squared_euclidean(embeddings):
    """Squared Euclidean distances, clamped at 0 against rounding, with an exact-zero diagonal."""
    embeddings = ops.cast(embeddings, "float32")
    squared_norms = ops.sum(ops.square(embeddings), axis=1)
    dot = ops.matmul(embeddings, ops.transpose(embeddings))
    norm_sums = squared_norms[:, None] + squared_norms[None, :]
    squared = norm_sums - 2.0 * dot
    # Scalars in `where`, not zeros_like: each B x B temporary is 256 MiB at B = 8,192.
    duplicate = ops.logical_or(squared <= _RELATIVE_ROUNDING * norm_sums, _diagonal(embeddings))
    return ops.where(duplicate, 0.0, squared)


def _diagonal(embeddings):
    return itself(ops.shape(embeddings)[0])


def safe_sqrt(squared):
    """sqrt of non-negative values, with gradient 0 (not NaN) where the value is 0."""
    # sqrt has an infinite derivative at 0: clamp to 1 there (so the gradient through the
    # discarded branch is finite) and zero the result.
    is_zero = ops.less_equal(squared, 0.0)
    return ops.where(is_zero, 0.0, ops.sqrt(ops.where(is_zero, 1.0, squared)))


def euclidean(embeddings):
    """Euclidean distances, with finite gradients where two embeddings coincide."""
    return safe_sqrt(squared_euclidean(embeddings))


def cosine(embeddings):
    """Cosine distance, 1 - cosine similarity, in [0, 2]; zero vectors count as orthogonal."""
    embeddings = ops.cast(embeddings, "float32")
    norms = ops.sqrt(ops.maximum(ops.sum(ops.square(embeddings), axis=1, keepdims=True), 1e-12))
    unit = embeddings / norms
    distances = 1.0 - ops.matmul(unit, ops.transpose(unit))
    # The same rounding guard as above: |u|^2 + |v|^2 = 2 for unit vectors.
    duplicate = ops.logical_or(distances <= 2 * _RELATIVE_ROUNDING, _diagonal(embeddings))
    return ops.where(duplicate, 0.0, distances)


def pairwise_distances(embeddings, distance="euclidean"):
    """The B x B matrix of `distance` between every pair of rows of `embeddings` [B, D].

    Args:
        embeddings: float tensor [B, D]; cast to float32 so that mixed-precision models mine in
            full precision.
        distance: one of `euclidean`, `squared_euclidean`, `cosine` (1 - cosine similarity).

    Returns:
        float32 tensor [B, B] with a zero diagonal.
    """
    check_distance(distance)
    return BATCH_DISTANCES[distance](embeddings)


BATCH_DISTANCES = {"euclidean": euclidean, "squared_euclidean": squared_euclidean, "cosine": cosine}
