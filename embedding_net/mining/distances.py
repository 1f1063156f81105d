"""Pairwise distance matrices between the embeddings of one batch, in `keras.ops`.

Every distance here is a dissimilarity: 0 for identical vectors, larger for vectors farther
apart. Mining and losses work on the B x B matrix these functions return.
"""

from keras import ops

# The names are registered with the NumPy implementations, which must not import TensorFlow;
# `BATCH_DISTANCES` gives each its `keras.ops` form (a test checks that both cover the registry).
from embedding_net.evaluation.distances import check_distance

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
    squared = ops.where(squared <= _RELATIVE_ROUNDING * norm_sums, ops.zeros_like(squared), squared)
    off_diagonal = 1.0 - ops.eye(ops.shape(embeddings)[0], dtype="float32")
    return squared * off_diagonal


def safe_sqrt(squared):
    """sqrt of non-negative values, with gradient 0 (not NaN) where the value is 0."""
    is_zero = ops.less_equal(squared, 0.0)
    # sqrt has an infinite derivative at 0: take it of 1 there and zero the result.
    safe = ops.where(is_zero, ops.ones_like(squared), squared)
    return ops.where(is_zero, ops.zeros_like(squared), ops.sqrt(safe))


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
    distances = ops.where(distances <= 2 * _RELATIVE_ROUNDING, ops.zeros_like(distances), distances)
    off_diagonal = 1.0 - ops.eye(ops.shape(embeddings)[0], dtype="float32")
    return distances * off_diagonal


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
