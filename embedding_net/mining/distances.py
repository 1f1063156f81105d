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


def _squared_euclidean_values(embeddings):
    """Squared Euclidean distances of float32 rows, clamped at 0 against rounding, with an
    exact-zero diagonal and exact zeros between duplicates."""
    squared_norms = ops.sum(ops.square(embeddings), axis=1)
    # One B x B buffer, updated by each step (TensorFlow reuses an operand that nothing else
    # holds); at B = 8,192 each B x B temporary is 256 MiB, so no second matrix of norm sums.
    squared = ops.matmul(embeddings * -2.0, ops.transpose(embeddings))
    squared = squared + squared_norms[:, None] + squared_norms[None, :]
    # A residue below the rounding of |a|^2 + |b|^2 is a duplicate: d - r |a|^2 <= r |b|^2.
    residue = ops.less_equal(squared - _RELATIVE_ROUNDING * squared_norms[:, None],
                             _RELATIVE_ROUNDING * squared_norms[None, :])
    return ops.where(ops.logical_or(residue, _diagonal(embeddings)), 0.0, squared)


def _diagonal(embeddings):
    return itself(ops.shape(embeddings)[0])


def safe_sqrt(squared):
    """sqrt of non-negative values, with gradient 0 (not NaN) where the value is 0."""
    # sqrt has an infinite derivative at 0: clamp to 1 there (so the gradient through the
    # discarded branch is finite) and zero the result.
    is_zero = ops.less_equal(squared, 0.0)
    return ops.where(is_zero, 0.0, ops.sqrt(ops.where(is_zero, 1.0, squared)))


def _pair_gradient(weights, embeddings):
    """The gradient with respect to `embeddings` [B, D] of a function of the pairs whose partial
    derivative in e_i through pair (i, j) is weights[i, j] (e_i - e_j) (and the mirror image in
    e_j): row k gets e_k (sum_j w_kj + sum_i w_ik) - (W e)_k - (W^T e)_k."""
    totals = ops.sum(weights, axis=1) + ops.sum(weights, axis=0)
    # W^T e as (e^T W)^T: a [D, B] transpose instead of a B x B one.
    return (embeddings * totals[:, None] - ops.matmul(weights, embeddings)
            - ops.transpose(ops.matmul(ops.transpose(embeddings), weights)))


# The three distances below differentiate in closed form. Automatic differentiation through the
# expansion keeps about four B x B temporaries alive for the backward pass (dot products, sums,
# masks, the square root's input): 1.1 GiB at B = 8,192 before any loss. The closed form keeps
# only the result, and builds its B x B weights during the backward pass alone. Entries forced to
# 0 (the diagonal, duplicates) get gradient 0, as the `where` of the expansion gives them.

def squared_euclidean(embeddings):
    """Squared Euclidean distances, clamped at 0 against rounding, with an exact-zero diagonal."""

    @ops.custom_gradient
    def distances(embeddings):
        squared = _squared_euclidean_values(embeddings)

        def gradient(*upstream_grads, upstream=None):
            upstream = upstream_grads[0] if upstream is None else upstream
            # d/de_i of |e_i - e_j|^2 is 2 (e_i - e_j); a zeroed entry passes nothing (sign 0).
            return _pair_gradient(ops.sign(squared) * upstream * 2.0, embeddings)

        return squared, gradient

    return distances(ops.cast(embeddings, "float32"))


def euclidean(embeddings):
    """Euclidean distances, with gradient 0 (finite) where two embeddings coincide."""

    @ops.custom_gradient
    def distances(embeddings):
        # Every entry is >= 0 and the gradient is below, so no clamp before this sqrt.
        result = ops.sqrt(_squared_euclidean_values(embeddings))

        def gradient(*upstream_grads, upstream=None):
            upstream = upstream_grads[0] if upstream is None else upstream
            # d/de_i of |e_i - e_j| is (e_i - e_j) / d_ij; a zeroed entry passes nothing.
            return _pair_gradient(ops.divide_no_nan(upstream, result), embeddings)

        return result, gradient

    return distances(ops.cast(embeddings, "float32"))


def cosine(embeddings):
    """Cosine distance, 1 - cosine similarity, in [0, 2]; zero vectors count as orthogonal."""

    @ops.custom_gradient
    def distances(embeddings):
        squared_norms = ops.sum(ops.square(embeddings), axis=1, keepdims=True)
        norms = ops.sqrt(ops.maximum(squared_norms, 1e-12))
        unit = embeddings / norms
        result = 1.0 - ops.matmul(unit, ops.transpose(unit))
        # The same rounding guard as above: |u|^2 + |v|^2 = 2 for unit vectors.
        duplicate = ops.logical_or(result <= 2 * _RELATIVE_ROUNDING, _diagonal(embeddings))
        result = ops.where(duplicate, 0.0, result)

        def gradient(*upstream_grads, upstream=None):
            upstream = upstream_grads[0] if upstream is None else upstream
            # The entries forced to 0 (diagonal, duplicates) are the only zeros: others exceed the guard.
            weights = ops.sign(result) * upstream  # result >= 0: sign 1, or 0 where zeroed
            d_unit = -(ops.matmul(weights, unit) + ops.transpose(ops.matmul(ops.transpose(unit), weights)))
            # Through u = e / max(|e|, 1e-6): the radial part drops out where the norm is not clamped.
            radial = ops.where(squared_norms > 1e-12, unit * ops.sum(d_unit * unit, axis=1, keepdims=True), 0.0)
            return (d_unit - radial) / norms

        return result, gradient

    return distances(ops.cast(embeddings, "float32"))


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
