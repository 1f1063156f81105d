"""Triplet selection rules as masked reductions over a B x B distance matrix.

Each rule is defined once here. In-batch losses call them on the distances of a training batch;
the generators that mine with the live model call the same functions on the embeddings they
computed. Masked entries are replaced by values that can never win a reduction, so no Python
loop over pairs or triplets is needed and no tensor larger than B x B is built, except by
`batch_all_triplet_values`, which is B x B x B by definition (the losses and monitors use
`embedding_net.mining.batch_all` instead, which never builds it), and by the [B, M, B]
comparisons of few positives per anchor (M <= 8) in small batches (`compares_positives`).
FaceNet's semi-hard rule is in `embedding_net.mining.semi_hard`.

Conventions: `labels` is an integer vector [B]; `distances` is [B, B] with `distances[a, j]`
the distance from anchor a to sample j; a positive of anchor a is another sample (j != a) of the
same class, a negative is a sample of another class.

The triplet value of (a, p, n) is v = d(a, p) - d(a, n) + margin, computed as in
`batch_all_triplet_values`; the hinge of every triplet loss is active exactly when v > 0.
"""

from keras import ops

def itself(rows, columns=None):
    """Boolean [rows, columns]: True on the diagonal, where a sample meets itself. Built from
    indices, not from a float identity matrix: at B = 8,192 that would be 256 MiB more."""
    columns = rows if columns is None else columns
    return ops.equal(ops.arange(rows)[:, None], ops.arange(columns)[None, :])


def take_per_row(values, indices):
    """values[a, indices[a, j]] for every (a, j): `take_along_axis` on axis 1 as one flat gather
    with int32 indices. Keras' TensorFlow `take_along_axis` makes int64 copies of the indices, over
    1 GiB of temporaries for a B x B gather at B = 8,192."""
    rows, columns = values.shape
    # int32 flat indices while they fit (shapes known at tracing), int64 beyond 2^31 values.
    dtype = "int32" if rows is not None and columns is not None and rows * columns < 2 ** 31 else "int64"
    starts = ops.arange(ops.shape(indices)[0], dtype=dtype)[:, None] * ops.cast(ops.shape(values)[1], dtype)
    return ops.take(ops.reshape(values, (-1,)), starts + ops.cast(indices, dtype))


def positive_mask(labels):
    """Boolean [B, B]: True where j != a and labels[j] == labels[a]."""
    labels = ops.reshape(labels, (-1,))
    same = ops.equal(labels[:, None], labels[None, :])
    return ops.logical_and(same, ops.logical_not(itself(ops.shape(labels)[0])))


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


# Up to this many positives per anchor, semi-hard and batch-all mining compare every negative
# with every positive at once ([B, M, B], at most 8 B^2 values): a P x K batch has K - 1.
MAX_POSITIVE_SLOTS = 8
# ... and only while [B, M, B] stays under this many values (256 MiB of float32): at B = 8,192 a
# temporary would be 768 MiB with M = 3, so large batches go one positive slot at a time instead.
MAX_COMPARISON_VALUES = 2 ** 26
# One slot at a time is M passes over B x B, where sorting the negatives costs about log2 B
# passes and keeps more B x B temporaries. At B = 8,192 on 2 cores, semi-hard's loss and gradient:
# M = 15 slots 3.3 s against sorting 4.1 s, M = 31 5.7 s and 1.6 GiB against 4.6 s and 2.3 GiB,
# M = 63 9.8 s against 3.8 s; batch-all's: 2.0 s and 3.7 s against 6.7 s (M = 15, 31). Beyond
# this many slots, both sort.
MAX_SLOT_PASSES = 32


def compares_positives(distances, slots):
    """Whether to compare each of `slots` positives with every sample ([B, M, B] values) rather
    than take one slot at a time or sort the negatives (O(B^2) memory); all give the same result."""
    batch = ops.cast(ops.shape(distances)[0], "int64")
    return ops.logical_and(ops.less_equal(slots, MAX_POSITIVE_SLOTS),
                           ops.less_equal(ops.cast(slots, "int64") * batch * batch, MAX_COMPARISON_VALUES))


def positive_slot_count(positives):
    """M, the largest number of positives of an anchor, and at least 1 (a scalar int32)."""
    # At least one slot: reductions over an empty axis fail; an unused slot is masked anyway.
    return ops.maximum(ops.max(ops.sum(ops.cast(positives, "int32"), axis=1)), 1)


def positive_slots(positives, slots):
    """The columns of each anchor's first `slots` positives, for [B, M, ...] comparisons.

    Returns:
        `(columns, in_use)`: int32 [B, M] batch indices and boolean [B, M], False in the slots
        past an anchor's last positive (their column is then some non-positive).
    """
    # int8, not float32: 64 MiB instead of 256 at B = 8,192. top_k keeps ties in index order.
    _, columns = ops.top_k(ops.cast(positives, "int8"), slots)
    columns = ops.cast(columns, "int32")
    return columns, take_per_row(positives, columns)


def positive_slot_distances(distances, positives, slots=None):
    """d(a, p) on each anchor's positive slots rather than the B x B layout (M = K - 1 in a P x K
    batch): `(distances [B, M], in_use [B, M])`, M = `slots` or `positive_slot_count`."""
    slots = positive_slot_count(positives) if slots is None else slots
    columns, in_use = positive_slots(positives, slots)
    return take_per_row(distances, columns), in_use


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


def anchor_positive_pairs(labels):
    """Every positive pair (a, p), in row-major order of `positive_mask`.

    Returns:
        `(anchors, positives)`, two int32 vectors [P] of batch indices.
    """
    anchors, positives = ops.nonzero(positive_mask(labels))
    return ops.cast(anchors, "int32"), ops.cast(positives, "int32")
