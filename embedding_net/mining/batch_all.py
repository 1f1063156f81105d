"""Batch-all triplet sums without building the B^3 triplets at once.

Batch-all looks at every valid triplet (a, p, n) of a batch: B^3 of them, 4 GiB of float32 per
temporary at B = 1024. But a triplet needs p to be a positive of a, and a P x K batch gives an
anchor only K - 1 of them. So with M = the largest number of positives of an anchor, batches
with M <= `mining.MAX_POSITIVE_SLOTS` (8: every P x K batch with K <= 9) compare each positive
of an anchor with all B samples, [B, M, B] values, masked; that is the fast path for both the
hinge and the soft margin, while [B, M, B] stays small (`rules.compares_positives`). Other
batches take other ways:

- The hinge `max(d(a, p) - d(a, n) + margin, 0)`: for a pair (a, p) it is non-zero for the
  negatives of a nearer than x = d(a, p) + margin. Up to `rules.MAX_SLOT_PASSES` (32) positives
  per anchor, one positive slot after the other (B = 8,192 in a P x K batch), with the gradient
  in closed form. Beyond, the hinges of (a, p) sum to `k x - (sum of those k distances)`: with
  the negatives of each anchor sorted once, k is a binary search and the sum a prefix sum,
  O(B^2 log B) time. Both in O(B^2) memory with exact gradients; the active-triplet count of the
  collapse monitor is the same k.
- The soft margin `log(1 + exp(d(a, p) - d(a, n)))` has no such shortcut: its triplets are formed
  for a block of anchors at a time, one block after the other; a block never holds more than B^3 / 8
  triplets (so its few temporaries stay under B^3 floats) nor more than `MAX_BLOCK_TRIPLETS`. The
  gradient is formed block by block as well: automatic differentiation through the loop would
  keep every block for the backward pass, which is the B^3 again.

The values and the valid mask are those of `mining.batch_all_triplet_values`; tests compare
every way with it. (The slot and sorting ways test d(a, n) < d(a, p) + margin, which float32
rounding can tell apart from d(a, p) - d(a, n) + margin > 0 at the boundary itself, where the
hinge is a few 1e-8: the active count may then differ by one.) Sample weights weigh a triplet by the weight of its anchor.
"""

from keras import ops

from embedding_net.mining import rules

# 2^21 triplets: 8 MiB of float32 a temporary. B = 128 runs 8 blocks of 16 anchors, B = 256 8
# blocks of 32, B = 1024 512 blocks of 2.
MAX_BLOCK_TRIPLETS = 2 ** 21


def block_rows(batch_size, max_block_triplets=MAX_BLOCK_TRIPLETS):
    """Anchors per block for a batch of `batch_size` (a Python int or a scalar tensor)."""
    if isinstance(batch_size, int):
        return max(1, min(batch_size // 8, max_block_triplets // max(batch_size * batch_size, 1)))
    return ops.maximum(1, ops.minimum(batch_size // 8, max_block_triplets // (batch_size * batch_size)))


def _padded_blocks(distances, labels, sample_weight, max_block_triplets):
    """Rows padded to whole blocks (padding anchors have no valid triplet) and a block reader."""
    batch_size = ops.shape(distances)[0]
    rows = block_rows(batch_size, max_block_triplets)
    count = (batch_size + rows - 1) // rows
    pad = [[0, count * rows - batch_size], [0, 0]]
    positives = ops.pad(ops.cast(rules.positive_mask(labels), "float32"), pad)
    negatives = ops.pad(ops.cast(rules.negative_mask(labels), "float32"), pad)
    weights = (ops.ones((batch_size,), "float32") if sample_weight is None
               else ops.cast(ops.reshape(sample_weight, (-1,)), "float32"))
    weights = ops.pad(weights, pad[:1])

    def block(padded_distances, index):
        start = index * rows
        take = lambda matrix: ops.slice(matrix, (start, 0), (rows, batch_size))  # noqa: E731
        d = take(padded_distances)
        values = d[:, :, None] - d[:, None, :]  # [anchor, p, n]: d(a, p) - d(a, n)
        valid = (take(positives)[:, :, None] * take(negatives)[:, None, :]
                 * ops.slice(weights, (start,), (rows,))[:, None, None])
        return values, valid

    return block, ops.arange(count), pad


def _sequential(step, init, indices):
    # ops.scan runs one block after the other (the TensorFlow loop it builds allows one
    # iteration in flight), which is what bounds the memory; ops.map would overlap them.
    return ops.scan(step, init, indices)


def negatives_nearer_than(distances, labels, thresholds):
    """For every entry (a, j) of `thresholds` [B, X]: how many negatives n of anchor a have
    d(a, n) < thresholds[a, j], and the sum of their distances.

    Returns:
        `(count, total)`: float32 [B, X] each; `total` is differentiable in `distances`.
    """
    negatives = rules.negative_mask(labels)
    beyond = ops.stop_gradient(ops.max(distances)) + 1.0  # sorts masked entries last
    nearest_first = ops.sort(ops.where(negatives, distances, beyond), axis=1)
    below = ops.vectorized_map(lambda rows: ops.searchsorted(rows[0], rows[1], side="left"),
                               (nearest_first, ops.stop_gradient(thresholds)))
    negative_count = ops.sum(ops.cast(negatives, "int32"), axis=1)
    below = ops.minimum(ops.cast(below, "int32"), negative_count[:, None])
    # prefix[a, k]: the sum of the k + 1 nearest negatives of a (no leading zero column: that
    # concatenation would be one more B x B copy).
    prefix = ops.cumsum(nearest_first, axis=1)
    nearer_sum = ops.where(below > 0, rules.take_per_row(prefix, ops.maximum(below - 1, 0)), 0.0)
    return ops.cast(below, "float32"), nearer_sum


def batch_all_sums(distances, labels, margin, soft_margin=False, sample_weight=None,
                   max_block_triplets=MAX_BLOCK_TRIPLETS):
    """The weighted sum of the hinge over all valid triplets, and the weight of the active ones.

    Args:
        distances: float32 [B, B], differentiable.
        labels: integer [B].
        margin: the margin of `max(d(a, p) - d(a, n) + margin, 0)`.
        soft_margin: use `log(1 + exp(d(a, p) - d(a, n)))` instead (every triplet is active).
        sample_weight: optional [B], the weight of each anchor.
        max_block_triplets: the most triplets one block may hold (soft margin only).

    Returns:
        `(loss_sum, active_weight)`: scalars; the gradient flows through `loss_sum`.
    """
    weights = (ops.ones_like(distances[:, 0]) if sample_weight is None
               else ops.cast(ops.reshape(sample_weight, (-1,)), "float32"))
    if soft_margin:
        slots = rules.positive_slot_count(rules.positive_mask(labels))
        return ops.cond(
            ops.less_equal(slots, rules.MAX_POSITIVE_SLOTS),
            lambda: _soft_margin_by_comparison(distances, labels, weights, slots),
            lambda: _soft_margin_sums(distances, labels, sample_weight, max_block_triplets),
        )
    hinges, active = hinges_per_anchor(distances, labels, margin)
    return ops.sum(hinges * weights), ops.sum(active * weights)


def hinges_per_anchor(distances, labels, margin):
    """Per anchor a: the sum of the hinge over its valid triplets (a, p, n), and how many are active.

    With M = the largest number of positives of an anchor, batches with M <= 8 (every P x K
    batch with K <= 9) and B^2 M <= 2^26 compare each positive with every negative, [B, M, B]
    values (`rules.compares_positives`); larger batches with M <= 32 take one positive slot at
    a time (`_hinges_by_slots`, `rules.MAX_SLOT_PASSES`); batches with more positives use sorted
    negatives and prefix sums (`negatives_nearer_than`). All in O(B^2) memory.

    Returns:
        `(hinge_sums, active_counts)`: float32 [B] each; the gradient flows through `hinge_sums`.
    """
    slots = rules.positive_slot_count(rules.positive_mask(labels))
    compares = rules.compares_positives(distances, slots)
    # The slots' way first, in the outer cond: TensorFlow cannot differentiate its custom
    # gradient inside a cond inside a cond (cond_v2 asserts on the captured tensors).
    return ops.cond(
        ops.logical_and(ops.logical_not(compares), ops.less_equal(slots, rules.MAX_SLOT_PASSES)),
        lambda: _hinges_by_slots(distances, labels, margin),
        lambda: ops.cond(compares, lambda: _hinges_by_comparison(distances, labels, margin, slots),
                         lambda: _hinges_by_sorting(distances, labels, margin)),
    )


def _values_by_comparison(distances, labels, slots):
    """d(a, p) - d(a, n) as [a, positive slot, n] values, and their valid mask."""
    positive_distances, in_use = rules.positive_slot_distances(distances, rules.positive_mask(labels), slots)
    values = positive_distances[:, :, None] - distances[:, None, :]
    valid = ops.logical_and(in_use[:, :, None], rules.negative_mask(labels)[:, None, :])
    return values, valid


def _soft_margin_by_comparison(distances, labels, weights, slots):
    values, valid = _values_by_comparison(distances, labels, slots)
    valid = ops.cast(valid, "float32") * weights[:, None, None]
    return ops.sum(ops.softplus(values) * valid), ops.sum(valid)


def _hinges_by_comparison(distances, labels, margin, slots):
    values, valid = _values_by_comparison(distances, labels, slots)
    values = values + margin
    active = ops.logical_and(valid, ops.greater(values, 0.0))
    hinges = ops.sum(ops.where(active, values, 0.0), axis=(1, 2))
    return hinges, ops.sum(ops.cast(active, "float32"), axis=(1, 2))


def _hinges_by_sorting(distances, labels, margin):
    # On each anchor's positive slots [B, M], not on the B x B layout: M = K - 1 in a P x K batch.
    positive_distances, in_use = rules.positive_slot_distances(distances, rules.positive_mask(labels))
    reach = positive_distances + margin  # a negative nearer than this makes (a, p, n) active
    count, total = negatives_nearer_than(distances, labels, reach)
    # k x - sum is a sum of k non-negative terms: clamp the rounding below 0.
    hinges = ops.maximum(count * reach - total, 0.0)
    in_use = ops.cast(in_use, "float32")
    return ops.sum(hinges * in_use, axis=1), ops.sum(count * in_use, axis=1)


def _hinges_by_slots(distances, labels, margin):
    """`hinges_per_anchor` for large batches with few positives per anchor (B = 8,192 in a P x K
    batch) in B x B temporaries: [B, M, B] would be 768 MiB each there, and differentiating
    through sorted negatives keeps several B x B matrices for the backward pass.

    One positive slot after the other, with the gradient in closed form (automatic
    differentiation would keep every slot's temporaries): for reach r_am = d(a, p_m) + margin,
    d(a, p_m) is in as many active terms as there are negatives nearer than r_am, and d(a, n)
    in as many as there are reaches of a above it, with the opposite sign."""
    positives, negatives = rules.positive_mask(labels), rules.negative_mask(labels)
    columns, in_use = rules.positive_slots(positives, rules.positive_slot_count(positives))
    batch_size, slots = ops.shape(columns)[0], ops.shape(columns)[1]
    # An unused slot points at the anchor itself, which is neither positive nor negative: the
    # gradient written there below is 0 and overwrites nothing.
    columns = ops.where(in_use, columns, ops.arange(batch_size, dtype="int32")[:, None])

    @ops.custom_gradient
    def sums(distances):
        # The gradient reads this name, not the argument: inside a cond, TensorFlow cannot
        # feed a custom gradient its own argument (stop_gradient is an identity, no copy).
        distances = ops.stop_gradient(distances)
        # An unused slot reaches below every distance (>= 0): no negative is ever nearer.
        reach = ops.where(in_use, rules.take_per_row(distances, columns) + margin, -1.0)

        def slot(carry, index):
            slot_reach = ops.take(reach, index, axis=1)[:, None]
            active = ops.logical_and(negatives, ops.less(distances, slot_reach))
            hinges = ops.sum(ops.where(active, slot_reach - distances, 0.0), axis=1)
            return carry, ops.stack([hinges, ops.sum(ops.cast(active, "float32"), axis=1)])

        # Keras' TensorFlow scan wants each output shaped as the carry: [2, B].
        _, per_slot = _sequential(slot, ops.zeros((2, batch_size), "float32"), ops.arange(slots))  # [M, 2, B]
        nearer_counts = ops.transpose(per_slot[:, 1])  # [B, M]

        def gradient(*upstream_grads, upstream=None):
            upstream = (upstream_grads[0] if upstream is None else upstream[0])[:, None]
            # The reaches of a above d(a, n): M minus those at or below it, a binary search in
            # a's sorted reaches.
            at_or_below = ops.vectorized_map(lambda rows: ops.searchsorted(rows[0], rows[1], side="right"),
                                             (ops.sort(reach, axis=1), distances))
            slopes = ops.where(negatives, (ops.cast(at_or_below, "float32") - ops.cast(slots, "float32")) * upstream, 0.0)
            rows = ops.reshape(ops.repeat(ops.arange(batch_size, dtype="int32")[:, None], slots, axis=1), (-1,))
            at_positives = ops.stack([rows, ops.reshape(columns, (-1,))], axis=1)
            return ops.scatter_update(slopes, at_positives, ops.reshape(upstream * nearer_counts, (-1,)))

        return (ops.sum(per_slot[:, 0], axis=0), ops.stop_gradient(ops.sum(per_slot[:, 1], axis=0))), gradient

    return sums(distances)


def _soft_margin_sums(distances, labels, sample_weight, max_block_triplets):
    block, indices, pad = _padded_blocks(distances, labels, sample_weight, max_block_triplets)
    batch_size = ops.shape(distances)[0]

    @ops.custom_gradient
    def summed(distances):
        padded = ops.pad(distances, pad)

        def forward(carry, index):
            values, valid = block(padded, index)
            carry = (carry[0] + ops.sum(ops.softplus(values) * valid), carry[1] + ops.sum(valid))
            return carry, carry

        zero = ops.zeros((), "float32")
        (loss_sum, active_weight), _ = _sequential(forward, (zero, zero), indices)

        def backward(carry, index):
            values, valid = block(padded, index)
            slope = ops.sigmoid(values) * valid
            # d(a, j) enters as the positive of (a, j, n) and as the negative of (a, p, j).
            rows = ops.sum(slope, axis=2) - ops.sum(slope, axis=1)
            return rows, rows

        def gradient(*upstream_grads, upstream=None):
            upstream = upstream_grads[0] if upstream is None else upstream
            rows = block_rows(batch_size, max_block_triplets)
            init = ops.zeros((rows, ops.shape(padded)[1]), "float32")
            _, stacked = _sequential(backward, init, indices)
            full = ops.reshape(stacked, (-1, ops.shape(padded)[1]))
            return upstream * full[:batch_size]

        return (loss_sum, ops.stop_gradient(active_weight)), gradient

    return summed(distances)


def active_fraction(distances, labels, margin):
    """The fraction of valid triplets with d(a, p) - d(a, n) + margin > 0, and their count.

    Returns:
        `(fraction, valid_count)`; the fraction is 0 when there is no valid triplet.
    """
    distances = ops.stop_gradient(distances)
    _, active = hinges_per_anchor(distances, labels, margin)
    # Valid triplets of a: (its positives) x (its negatives).
    positives = ops.sum(ops.cast(rules.positive_mask(labels), "float32"), axis=1)
    negatives = ops.sum(ops.cast(rules.negative_mask(labels), "float32"), axis=1)
    valid_count = ops.sum(positives * negatives)
    return ops.sum(active) / ops.maximum(valid_count, 1.0), valid_count
