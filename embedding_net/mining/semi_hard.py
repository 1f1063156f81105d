"""FaceNet's semi-hard negative (Schroff et al. 2015) for every anchor-positive pair (a, p): the
nearest negative n with d(a, n) > d(a, p) (strictly), or the farthest negative of a when none is
farther than p.

The choice is a column index, found without gradient; the chosen distance is then gathered from
the differentiable matrix. So the backward pass holds no B x B temporary of its own, where
differentiating through masked minima or sorted values would keep several (1 GiB at B = 8,192).
Three ways find the same index, by the batch's shape (M = the largest number of positives of an
anchor; a P x K batch has M = K - 1):

- M <= 8 and B^2 M <= 2^26 (`rules.compares_positives`): every threshold against every negative
  at once, [B, M, B] masked reductions;
- larger batches with M <= 32 (`rules.MAX_SLOT_PASSES`): one threshold column after the other,
  B x B temporaries only;
- M > 32: each anchor's negatives sorted once and binary-searched, O(B^2 log B) time.

Conventions as in `embedding_net.mining.rules`.
"""

from keras import ops

from embedding_net.mining import rules


def semi_hard_negative(distances, positives, negatives):
    """The rule on the [B, B] layout: for every pair (a, p) of `positives`, the chosen d(a, n).

    Returns:
        `(negative_distances, has_negative)`: float [B, B] with the chosen d(a, n) for each pair
        (meaningful where `positives` holds), and boolean [B] telling which anchors have any
        negative at all.
    """
    slots = rules.positive_slot_count(positives)
    chosen = ops.cond(
        rules.compares_positives(distances, slots),
        lambda: _semi_hard_by_comparison(distances, positives, negatives, slots),
        lambda: _semi_hard_by_sorting(distances, negatives),
    )
    return chosen, ops.any(negatives, axis=1)


def semi_hard_columns(distances, negatives, thresholds):
    """The column n of the chosen negative for each anchor a and threshold of `thresholds`
    [B, M]: int32 [B, M], in O(B^2) memory whatever B and M (see the module docstring)."""
    distances, thresholds = ops.stop_gradient(distances), ops.stop_gradient(thresholds)
    slots = ops.shape(thresholds)[1]
    return ops.cond(
        rules.compares_positives(distances, slots),
        lambda: _columns_by_comparison(distances, negatives, thresholds),
        lambda: ops.cond(ops.less_equal(slots, rules.MAX_SLOT_PASSES),
                         lambda: _columns_by_slots(distances, negatives, thresholds),
                         lambda: _columns_by_sorting(distances, negatives, thresholds)),
    )


# What masked entries become before an argmin or a sort: no gradient flows here, so +inf is safe,
# where `rules._never_wins_min` (the largest distance + 1) rounds back to that distance once
# distances reach 2^24 and would tie with it.
_BEYOND = float("inf")


def _farthest(distances, negatives):
    """Per anchor, the column of its farthest negative (any column when it has none)."""
    return ops.cast(ops.argmax(ops.where(negatives, distances, -1.0), axis=1), "int32")


def _columns_by_comparison(distances, negatives, thresholds):
    to_all = distances[:, None, :]  # [B, 1, B]
    farther = ops.logical_and(negatives[:, None, :], ops.greater(to_all, thresholds[:, :, None]))
    nearest_farther = ops.cast(ops.argmin(ops.where(farther, to_all, _BEYOND), axis=2), "int32")
    return ops.where(ops.any(farther, axis=2), nearest_farther, _farthest(distances, negatives)[:, None])


def _columns_by_slots(distances, negatives, thresholds):
    farthest = _farthest(distances, negatives)

    def column(carry, slot):
        farther = ops.logical_and(negatives, ops.greater(distances, ops.take(thresholds, slot, axis=1)[:, None]))
        nearest_farther = ops.cast(ops.argmin(ops.where(farther, distances, _BEYOND), axis=1), "int32")
        return carry, ops.where(ops.any(farther, axis=1), nearest_farther, farthest)

    # ops.scan runs one slot after the other (its TensorFlow loop allows one iteration in flight),
    # and Keras' TensorFlow scan wants each output shaped as the carry: a [B] carry.
    _, columns = ops.scan(column, ops.zeros_like(farthest), ops.arange(ops.shape(thresholds)[1]))
    return ops.transpose(columns)


def _columns_by_sorting(distances, negatives, thresholds):
    # Negatives nearest first, non-negatives last; the number of negatives of a at distance
    # <= d(a, p) is then the position of the first one farther away.
    negative_distances = ops.where(negatives, distances, _BEYOND)
    order = ops.cast(ops.argsort(negative_distances, axis=1), "int32")
    sorted_negatives = rules.take_per_row(negative_distances, order)
    farther_index = ops.cast(ops.vectorized_map(
        lambda rows: ops.searchsorted(rows[0], rows[1], side="right"), (sorted_negatives, thresholds)), "int32")
    negative_count = ops.sum(ops.cast(negatives, "int32"), axis=1)
    has_farther = ops.less(farther_index, negative_count[:, None])
    batch_size = ops.shape(distances)[0]
    nearest_farther = rules.take_per_row(order, ops.minimum(farther_index, batch_size - 1))
    farthest = rules.take_per_row(order, ops.maximum(negative_count - 1, 0)[:, None])
    return ops.where(has_farther, nearest_farther, farthest)


def _semi_hard_by_comparison(distances, positives, negatives, slots):
    """`semi_hard_negative` for few positives per anchor: [B, M, B] masked reductions."""
    columns, in_use = rules.positive_slots(positives, slots)
    fixed = ops.stop_gradient(distances)
    chosen = rules.take_per_row(distances, _columns_by_comparison(fixed, negatives, rules.take_per_row(fixed, columns)))
    # Back to the [B, B] layout: entry (a, columns[a, m]) gets chosen[a, m].
    placed = ops.one_hot(columns, ops.shape(distances)[0]) * ops.cast(in_use, "float32")[:, :, None]
    return ops.sum(placed * chosen[:, :, None], axis=1)


def _semi_hard_by_sorting(distances, negatives):
    """`semi_hard_negative` for any batch, every entry of the [B, B] layout a threshold."""
    return rules.take_per_row(distances, _columns_by_sorting(ops.stop_gradient(distances), negatives,
                                                             ops.stop_gradient(distances)))
