"""The rules of the mining generators: one negative for every anchor-positive pair of a draw
(`select_negatives`, kind `triplets`), and the pairs of a Siamese batch (kind `pairs`).

How the triplet rules relate to the in-batch ones (`TripletLoss`), with the triplet value
v = d(a, p) - d(a, n) + margin:

- `random`: any negative, i.e. any triplet of the `valid` mask of `batch_all_triplet_values`.
- `hard`: the negative of largest v, which is the nearest negative: its distance is
  `hardest_negative(distances, negatives)[a]`, for every positive p of a. Batch-hard also takes
  a's farthest positive; the generator keeps every positive pair instead.
- `random_hard`: a random negative with v > 0: one triplet drawn from those that batch-all
  averages over.
- `semi_hard`: a random negative with d(a, n) > d(a, p) (the strict comparison of
  `semi_hard_negative`) and v > 0, i.e. 0 < d(a, n) - d(a, p) < margin (FaceNet, Schroff et al.
  2015). When this window is not empty, `semi_hard_negative`'s choice (the nearest negative
  farther than p) is its hardest member; when it is empty, that choice is the fallback (no
  negative is farther than p) or a negative whose hinge is inactive (the pair costs 0).

A pair qualifies when its rule found a negative; a pair that does not qualify gets its hardest
negative (largest v) so that a generator can fill its batch with the hardest remaining triplets.
Each triplet rule is registered as its mask of candidates; `draw=False` marks the rule that
takes the hardest candidate instead of a random one.
"""

import numpy as np
from keras import ops

from embedding_net.mining.registry import check_mining, mining_entry, register_mining
from embedding_net.mining.rules import negative_mask, positive_mask


@register_mining("random", kind="triplets", draw=True)
def any_negative(is_negative, values, anchor_rows, positive_distances):
    """Every negative of the anchor."""
    return is_negative


@register_mining("hard", kind="triplets", draw=False)
@register_mining("random_hard", kind="triplets", draw=True)
def active_negatives(is_negative, values, anchor_rows, positive_distances):
    """The negatives whose triplet hinge is active (v > 0)."""
    return ops.logical_and(is_negative, ops.greater(values, 0.0))


@register_mining("semi_hard", kind="triplets", draw=True)
def semi_hard_negatives(is_negative, values, anchor_rows, positive_distances):
    """The active negatives farther than the positive: 0 < d(a, n) - d(a, p) < margin."""
    return ops.logical_and(active_negatives(is_negative, values, anchor_rows, positive_distances),
                           ops.greater(anchor_rows, positive_distances))


def select_negatives(distances, labels, anchors, positives, margin, mode, random_keys=None):
    """One negative for every anchor-positive pair, by a `triplets` rule (see the module docstring).

    Works on the [P, B] matrix of triplet values v[i, n] = d(a_i, p_i) - d(a_i, n) + margin: each
    rule is a mask of candidates over the negatives of a_i, and the choice a masked argmax, so no
    loop over pairs and nothing of size B x B x B is built.

    Args:
        distances: float [B, B], e.g. from `embedding_net.mining.distances.pairwise_distances`.
        labels: integer [B].
        anchors, positives: integer [P], the pairs, e.g. from `anchor_positive_pairs`.
        margin: the triplet margin.
        mode: `random`, `hard`, `random_hard` or `semi_hard`.
        random_keys: float [P, B] in [0, 1), required unless `mode` is `hard`: the candidate
            of pair i with the largest key is chosen, so uniform keys make a uniform choice and
            the function itself is deterministic.

    Returns:
        `(negatives, values, qualified)`: int32 [P], the chosen negative's batch index (-1 when
        a_i has no negative in the batch); float32 [P], its triplet value; bool [P], whether the
        rule found a candidate. A pair that does not qualify gets its hardest negative (largest
        value) instead.
    """
    check_mining(mode, "triplets")
    rule = mining_entry(mode, "triplets")
    if rule.info["draw"] and random_keys is None:
        raise ValueError(f"`mining` {mode!r} needs `random_keys`")
    distances = ops.cast(distances, "float32")
    anchors = ops.cast(ops.reshape(anchors, (-1,)), "int32")
    positives = ops.cast(ops.reshape(positives, (-1,)), "int32")
    anchor_rows = ops.take(distances, anchors, axis=0)  # [P, B]: d(a_i, n) for every n
    positive_distances = ops.take_along_axis(anchor_rows, positives[:, None], axis=1)  # [P, 1]
    values = positive_distances - anchor_rows + margin
    is_negative = ops.take(negative_mask(labels), anchors, axis=0)
    candidates = rule.obj(is_negative, values, anchor_rows, positive_distances)
    qualified = ops.any(candidates, axis=1)
    # Below every value v >= margin - max(d): a masked entry never wins the argmax.
    never = margin - ops.max(distances) - 1.0
    hardest = ops.cast(ops.argmax(ops.where(is_negative, values, never), axis=1), "int32")
    chosen = hardest
    if rule.info["draw"]:
        keys = ops.cast(random_keys, "float32")
        drawn = ops.cast(ops.argmax(ops.where(candidates, keys, -1.0), axis=1), "int32")
        chosen = ops.where(qualified, drawn, hardest)
    chosen_values = ops.take_along_axis(values, chosen[:, None], axis=1)[:, 0]
    has_negative = ops.any(is_negative, axis=1)
    chosen = ops.where(has_negative, chosen, -ops.ones_like(chosen))
    return chosen, chosen_values, ops.logical_and(qualified, has_negative)


@register_mining("hard", kind="pairs", needs_model=True)
def hardest_pairs(distances, labels, num_positive, num_negative):
    """The `num_positive` farthest positive pairs and the `num_negative` nearest negative pairs.

    Each unordered pair {i, j} is counted once, as (i, j) with i < j; ties go to the pair that
    comes first in row-major order. The batch must hold at least that many pairs of each kind.

    Returns:
        `(positive_pairs, negative_pairs)`, int32 [num_positive, 2] and [num_negative, 2] of
        batch indices, hardest first.
    """
    distances = ops.cast(distances, "float32")
    size = ops.shape(distances)[0]
    upper = ops.cast(ops.triu(ops.ones((size, size)), 1), "bool")
    # Scores to maximise; masked entries score below every unmasked one (distances are >= 0).
    low = -ops.max(distances) - 1.0
    positive_scores = ops.where(ops.logical_and(positive_mask(labels), upper), distances, low)
    negative_scores = ops.where(ops.logical_and(negative_mask(labels), upper), -distances, low)

    def top(scores, count):
        _, flat = ops.top_k(ops.reshape(scores, (-1,)), count)
        flat = ops.cast(flat, "int32")
        return ops.stack([flat // size, flat % size], axis=1)

    return top(positive_scores, num_positive), top(negative_scores, num_negative)


@register_mining("random", kind="pairs", needs_model=False)
def random_pairs(table, counts, num_positive, num_negative, rng):
    """`num_positive` positive pairs (two distinct images of a class drawn uniformly among the
    classes with at least 2 images) then `num_negative` negative pairs (one image of each of two
    distinct classes drawn uniformly), as image indices `(first, second)`.

    Args:
        table, counts: the images of each class, from `embedding_net.data.sampling.class_table`.
        rng: a `numpy.random.Generator`.
    """
    def image_of(classes, offset=None):
        class_counts = counts[classes]
        if offset is None:
            return (rng.random(len(classes)) * class_counts).astype(np.int64)
        # A second, different image: a uniform slot among the count - 1 others.
        other = (rng.random(len(classes)) * (class_counts - 1)).astype(np.int64)
        return other + (other >= offset)

    classes = rng.choice(np.flatnonzero(counts >= 2), num_positive)
    slot = image_of(classes)
    positives = (table[classes, slot], table[classes, image_of(classes, slot)])
    nonempty = np.flatnonzero(counts > 0)
    first_class = rng.integers(len(nonempty), size=num_negative)
    second_class = (first_class + rng.integers(1, len(nonempty), size=num_negative)) % len(nonempty)
    first_class, second_class = nonempty[first_class], nonempty[second_class]
    negatives = (table[first_class, image_of(first_class)], table[second_class, image_of(second_class)])
    return np.concatenate([positives[0], negatives[0]]), np.concatenate([positives[1], negatives[1]])
