"""How a loss reduces its terms: means that give 0 (not NaN) when nothing counts, and the
gathering and scaling that make a loss computed on several replicas equal the one-device loss."""

import tensorflow as tf
from keras import ops


def safe_mean(total, count):
    """`total / count`, and 0 (not NaN) when `count` is 0."""
    count = ops.cast(count, "float32")
    return ops.where(count > 0, total / ops.maximum(count, 1.0), ops.zeros_like(total))


def mean_of_nonzero(values, mask):
    """Mean of `values` over masked entries that are > 0 (0 if none): pairs already satisfied
    do not dilute the loss, as pytorch-metric-learning's AvgNonZeroReducer."""
    values = ops.where(mask, values, 0.0)
    return safe_mean(ops.sum(values), ops.sum(ops.cast(values > 0, "float32")))


def mean_of_hinges_below(distances, mask, margin):
    """`mean_of_nonzero(relu(margin - distances), mask)` for B x B matrices: the mean of
    margin - d over the masked pairs nearer than `margin`, 0 when there is none.

    The same value, but the backward pass keeps only the boolean mask of those pairs (64 MiB at
    B = 8,192): which pairs count is constant almost everywhere, so it is found without gradient,
    and differentiating `where(active, margin - d, 0)` needs nothing else, where relu and the
    masking would keep B x B floats.
    """
    active = ops.stop_gradient(ops.logical_and(mask, ops.less(distances, margin)))
    total = ops.sum(ops.where(active, margin - distances, 0.0))
    return safe_mean(total, ops.sum(ops.cast(active, "float32")))


def _replica_context():
    """The replica context of a step run on several replicas; None on one device and in a
    cross-replica context (e.g. Keras building the loss symbolically in `strategy.scope()`)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def gather_across_replicas(labels, embeddings, sample_weight=None):
    """The labels, embeddings (and sample weights) of every replica, concatenated in replica
    order, when called in a replica context of several replicas; the inputs unchanged otherwise.

    The gradient of `all_gather` sums the upstream gradients of all replicas and keeps this
    replica's rows: with the loss divided by the number of replicas (`scale_for_replicas`), each
    replica gets d(loss)/d(its embeddings), and the sum over replicas that the optimizer applies
    is the one-device gradient. Labels travel as int64 (int32 tensors live in host memory on
    GPUs); sample weights as float32.
    """
    context = _replica_context()
    if context is None:
        return labels, embeddings, sample_weight
    labels = context.all_gather(tf.cast(tf.reshape(labels, [-1]), tf.int64), axis=0)
    embeddings = context.all_gather(embeddings, axis=0)
    if sample_weight is not None:
        sample_weight = context.all_gather(tf.cast(tf.reshape(sample_weight, [-1]), tf.float32), axis=0)
    return labels, embeddings, sample_weight


def scale_for_replicas(loss):
    """`loss / replicas` in a replica context of several replicas, else `loss`.

    Keras' own losses do this in their reduction and `model.fit` multiplies it back for the
    logs; losses that return a scalar themselves must do it, or the summed gradients and the
    logged loss come out `replicas` times too large.
    """
    context = _replica_context()
    if context is None:
        return loss
    return loss * (1.0 / context.num_replicas_in_sync)
