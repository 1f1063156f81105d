"""What the pair-based losses of "A Metric Learning Reality Check" (Musgrave et al. 2020) share:
the cosine similarities of a batch against its references, the masks of positive and negative
pairs, a masked log-sum-exp, and one `__call__` (float32, replicas, references).

A pair-based loss is a function of the B x R similarity matrix between the batch's embeddings and
R reference embeddings (the batch itself; with cross-batch memory also earlier batches), and of
two boolean masks: `positives[a, j]` (j of a's class, j not a itself) and `negatives[a, j]` (j of
another class). Subclasses implement `pair_loss(similarities, positives, negatives)`.
"""

import keras
from keras import ops

from embedding_net.losses.reduction import gather_across_replicas, scale_for_replicas
from embedding_net.mining.rules import itself


def unit_length(embeddings):
    """Rows scaled to length 1 in float32 (a zero row stays 0, as in pytorch-metric-learning)."""
    embeddings = ops.cast(embeddings, "float32")
    return embeddings * ops.rsqrt(ops.maximum(ops.sum(ops.square(embeddings), axis=-1, keepdims=True), 1e-24))


def cosine_similarities(embeddings, references=None):
    """The cosine similarity [B, R] of each row of `embeddings` [B, D] with each row of
    `references` [R, D] (default: `embeddings` itself)."""
    unit = unit_length(embeddings)
    other = unit if references is None else unit_length(references)
    return ops.matmul(unit, ops.transpose(other))


def pair_masks(labels, reference_labels=None):
    """(positives, negatives), boolean [B, R]. With `reference_labels` None the references are
    the batch itself, and an embedding is never its own positive; with reference labels, the
    first B references are taken to be the batch (cross-batch memory puts them first)."""
    labels = ops.reshape(labels, (-1,))
    references = labels if reference_labels is None else ops.reshape(reference_labels, (-1,))
    same = ops.equal(labels[:, None], references[None, :])
    batch, total = ops.shape(labels)[0], ops.shape(references)[0]
    return ops.logical_and(same, ops.logical_not(itself(batch, total))), ops.logical_not(same)


def masked_logsumexp(values, mask, axis=1, add_one=False):
    """log(sum over masked entries of exp(values)) along `axis`, with `add_one` log(1 + sum ...).

    A row without a masked entry gives 0 (and no gradient), never -inf or NaN: the maximum that
    keeps the exponentials finite is taken over masked entries only.
    """
    # Scalars in `where`, not full_like / zeros_like: each B x B temporary is 256 MiB at B = 8,192.
    any_kept = ops.any(mask, axis=axis, keepdims=True)
    peak = ops.max(ops.where(mask, values, -1e30), axis=axis, keepdims=True)
    if add_one:
        peak = ops.maximum(peak, 0.0)
    peak = ops.stop_gradient(ops.where(any_kept, peak, ops.zeros_like(peak)))
    # Unmasked entries may exceed the peak by far: zero them before exp, or the overflow turns
    # the gradient of the `where` into NaN.
    shifted = ops.where(mask, values - peak, 0.0)
    total = ops.sum(ops.where(mask, ops.exp(shifted), 0.0), axis=axis, keepdims=True)
    if add_one:
        total = total + ops.exp(-peak)
    total = ops.where(any_kept, total, ops.ones_like(total))
    result = ops.where(any_kept, ops.log(total) + peak, ops.zeros_like(total))
    return ops.squeeze(result, axis=axis)


def with_memory(labels, embeddings, memory_labels, memory_embeddings):
    """(embeddings, labels) of the batch followed by those of a cross-batch memory, in float32 and
    int32; the memory's without gradient."""
    embeddings = ops.concatenate([ops.cast(embeddings, "float32"),
                                  ops.stop_gradient(ops.cast(memory_embeddings, "float32"))], axis=0)
    labels = ops.concatenate([ops.cast(ops.reshape(labels, (-1,)), "int32"),
                              ops.cast(ops.reshape(memory_labels, (-1,)), "int32")], axis=0)
    return embeddings, labels


class PairBasedLoss(keras.losses.Loss):
    """A loss called as `loss(labels[B], embeddings[B, D])` that subclasses define through
    `pair_loss(similarities, positives, negatives)` on cosine similarities in float32.

    Under a `tf.distribute` strategy the value is divided by the number of replicas (Keras'
    convention, see `embedding_net.training.distributed`); with `cross_replica` the labels and
    embeddings of every replica are gathered first, so the pairs are those of the global batch.
    """

    def __init__(self, cross_replica=False, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.cross_replica = bool(cross_replica)

    def pair_loss(self, similarities, positives, negatives):
        raise NotImplementedError

    def batch_loss(self, labels, embeddings, reference_labels=None, reference_embeddings=None):
        """The loss of one batch against references (default: the batch itself)."""
        similarities = cosine_similarities(embeddings, reference_embeddings)
        positives, negatives = pair_masks(labels, reference_labels)
        return self.pair_loss(similarities, positives, negatives)

    def references_loss(self, labels, embeddings, memory_labels, memory_embeddings):
        """The loss of the batch's anchors against the batch followed by a cross-batch memory
        (`embedding_net.losses.memory`); no gradient flows into the memory."""
        references, reference_labels = with_memory(labels, embeddings, memory_labels, memory_embeddings)
        return self.batch_loss(labels, embeddings, reference_labels, references)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras' Loss.__call__ would cast the labels to float and weigh the reduced scalar.
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} takes no sample weights: its terms are pairs, not images")
        if self.cross_replica:
            y_true, y_pred, _ = gather_across_replicas(y_true, y_pred)
        return scale_for_replicas(self.batch_loss(y_true, y_pred))

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"cross_replica": self.cross_replica})
        return config
