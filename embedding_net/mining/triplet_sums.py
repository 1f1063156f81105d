"""The in-batch minings (kind `batch`): which triplets of a P x K batch a triplet loss sums.

Each rule takes the batch's distances [B, B], labels [B], the hinge (a function of
d(a, p) - d(a, n)) and the anchors' weights [B], and returns `(total, count)`: the weighted sum
of its hinge terms and the weighted number of terms the loss is the mean over. `TripletLoss`
divides one by the other (0 when the count is 0).

- `all` (batch-all): every valid triplet; the count is the number of active triplets (value
  > 0), or of every valid triplet with the soft margin, which is never 0.
- `hard` (batch-hard, Hermans et al. 2017): per anchor, its farthest positive and nearest
  negative; the count is the number of anchors that have a positive.
- `semi_hard` (FaceNet, Schroff et al. 2015): for every positive pair (a, p), the nearest
  negative n with d(a, n) > d(a, p), or the farthest negative if there is none; the count is
  the number of positive pairs whose anchor has a negative.
"""

from keras import ops

from embedding_net.mining import rules
from embedding_net.mining.batch_all import batch_all_sums
from embedding_net.mining.registry import register_mining
from embedding_net.mining.semi_hard import semi_hard_columns


@register_mining("all")
def batch_all(distances, labels, hinge, weights, margin, soft_margin):
    # Never the B^3 triplets at once: see embedding_net.mining.batch_all.
    return batch_all_sums(distances, labels, margin, soft_margin, weights)


@register_mining("hard")
def batch_hard(distances, labels, hinge, weights, margin, soft_margin):
    positives, negatives = rules.positive_mask(labels), rules.negative_mask(labels)
    has_positive = ops.any(positives, axis=1)
    has_triplet = ops.logical_and(has_positive, ops.any(negatives, axis=1))
    losses = hinge(rules.hardest_positive(distances, positives) - rules.hardest_negative(distances, negatives))
    losses = ops.where(has_triplet, losses, ops.zeros_like(losses))
    return ops.sum(losses * weights), ops.sum(ops.cast(has_positive, "float32") * weights)


@register_mining("semi_hard")
def semi_hard(distances, labels, hinge, weights, margin, soft_margin):
    # On each anchor's positive slots [B, M], not on the B x B layout: M = K - 1 in a P x K batch.
    positives, negatives = rules.positive_mask(labels), rules.negative_mask(labels)
    slots = rules.positive_slot_count(positives)
    positive_columns, in_use = rules.positive_slots(positives, slots)
    negative_columns = semi_hard_columns(distances, negatives, rules.take_per_row(distances, positive_columns))
    # One gather for d(a, p) and d(a, n): its gradient is one B x B scatter, not two.
    chosen = rules.take_per_row(distances, ops.concatenate([positive_columns, negative_columns], axis=1))
    positive_distances, negative_distances = chosen[:, :slots], chosen[:, slots:]
    valid = ops.logical_and(in_use, ops.any(negatives, axis=1)[:, None])
    losses = ops.where(valid, hinge(positive_distances - negative_distances), 0.0)
    counted = ops.cast(valid, "float32") * weights[:, None]
    return ops.sum(losses * weights[:, None]), ops.sum(counted)
