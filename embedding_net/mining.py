"""Triplet selection rules as masked reductions over a B x B distance matrix.

Each rule is defined once here. In-batch losses call them on the distances of a training batch;
the generators that mine with the live model call the same functions on the embeddings they
computed. Masked entries are replaced by values that can never win a reduction, so no Python
loop over pairs or triplets is needed and no tensor larger than B x B is built, except by
`batch_all_triplet_values`, which is B x B x B by definition.

Conventions: `labels` is an integer vector [B]; `distances` is [B, B] with `distances[a, j]`
the distance from anchor a to sample j; a positive of anchor a is another sample (j != a) of the
same class, a negative is a sample of another class.
"""

from keras import ops

MINING_STRATEGIES = ("all", "hard", "semi_hard")


def check_mining(mining):
    """Raises a `ValueError` echoing `mining` unless it names a known strategy."""
    if mining not in MINING_STRATEGIES:
        raise ValueError(
            f"`mining` must be one of {', '.join(MINING_STRATEGIES)}. Received: {mining!r}"
        )


def positive_mask(labels):
    """Boolean [B, B]: True where j != a and labels[j] == labels[a]."""
    labels = ops.reshape(labels, (-1,))
    same = ops.equal(labels[:, None], labels[None, :])
    not_self = ops.logical_not(ops.cast(ops.eye(ops.shape(labels)[0]), "bool"))
    return ops.logical_and(same, not_self)


def negative_mask(labels):
    """Boolean [B, B]: True where labels[j] != labels[a]."""
    labels = ops.reshape(labels, (-1,))
    return ops.not_equal(labels[:, None], labels[None, :])


def _never_wins_min(distances):
    # A finite stand-in for +infinity: larger than every distance, and finite so that
    # differences and gradients built from it stay finite.
    return ops.stop_gradient(ops.max(distances)) + 1.0


def hardest_positive(distances, positives):
    """Per anchor, the largest distance to a positive; 0 for an anchor without positives."""
    return ops.max(ops.where(positives, distances, ops.zeros_like(distances)), axis=1)


def hardest_negative(distances, negatives):
    """Per anchor, the smallest distance to a negative; a value above every distance if none."""
    masked = ops.where(negatives, distances, ops.ones_like(distances) * _never_wins_min(distances))
    return ops.min(masked, axis=1)


def semi_hard_negative(distances, positives, negatives):
    """FaceNet's rule (Schroff et al. 2015) for every anchor-positive pair (a, p).

    The chosen negative is the nearest n with d(a, n) > d(a, p); when no negative is farther
    than the positive, it is the farthest negative. Negatives of each anchor are sorted once and
    the rule becomes a binary search, so the cost is O(B^2 log B) time and O(B^2) memory.

    Returns:
        `(negative_distances, has_negative)`: float [B, B] with the chosen d(a, n) for each pair
        (meaningful where `positives` holds), and boolean [B] telling which anchors have any
        negative at all.
    """
    del positives  # every (a, p) entry is computed; callers mask with their positive mask
    big = _never_wins_min(distances)
    negative_distances = ops.where(negatives, distances, ops.ones_like(distances) * big)
    sorted_negatives = ops.sort(negative_distances, axis=1)
    # Number of negatives of a at distance <= d(a, p): the index of the first one farther away.
    farther_index = ops.vectorized_map(
        lambda rows: ops.searchsorted(rows[0], rows[1], side="right"),
        (sorted_negatives, distances),
    )
    negative_count = ops.sum(ops.cast(negatives, "int32"), axis=1)
    has_farther = ops.less(ops.cast(farther_index, "int32"), negative_count[:, None])
    batch_size = ops.shape(distances)[0]
    nearest_farther = ops.take_along_axis(
        sorted_negatives, ops.minimum(ops.cast(farther_index, "int32"), batch_size - 1), axis=1
    )
    farthest = ops.take_along_axis(
        sorted_negatives, ops.maximum(negative_count - 1, 0)[:, None], axis=1
    )
    chosen = ops.where(has_farther, nearest_farther, farthest)
    return chosen, ops.greater(negative_count, 0)


def batch_all_triplet_values(distances, labels, margin):
    """d(a, p) - d(a, n) + margin for every triplet, and the mask of valid triplets.

    Returns:
        `(values, valid)`, both [B, B, B] indexed [a, p, n]; valid means p is a positive and n
        a negative of a.
    """
    positives = positive_mask(labels)
    negatives = negative_mask(labels)
    values = distances[:, :, None] - distances[:, None, :] + margin
    valid = ops.logical_and(positives[:, :, None], negatives[:, None, :])
    return values, valid
