"""Supervised contrastive loss (Khosla et al. 2020); NT-Xent (Chen et al. 2020) when each class
of the batch holds two views of one image."""

import keras
from keras import ops

from embedding_net.losses.pair_based import PairBasedLoss, masked_logsumexp
from embedding_net.losses.reduction import mean_of_nonzero
from embedding_net.losses.registry import register_loss


@register_loss("supcon", settings=("temperature", "cross_replica", "memory_size", "memory_warmup_steps"))
@keras.saving.register_keras_serializable(package="embedding_net")
class SupConLoss(PairBasedLoss):
    """Supervised contrastive loss on cosine similarities s, at temperature t.

    Per anchor a with positives P(a) and every other embedding A(a) = P(a) + N(a):
    L_a = -1/|P(a)| sum_{p in P(a)} [s_ap / t - log sum_{j in A(a)} exp(s_aj / t)],
    the "L_out" form of the paper; the loss is the mean over the anchors whose L_a > 0
    (pytorch-metric-learning's default reducer). A batch without a positive or without a
    negative pair gives 0.

    Args:
        temperature: t, > 0.
        cross_replica: see `PairBasedLoss`.
    """

    def __init__(self, temperature=0.1, cross_replica=False, name="supcon_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0. Received: {temperature!r}")
        self.temperature = float(temperature)

    def pair_loss(self, similarities, positives, negatives):
        logits = similarities / self.temperature
        denominator = masked_logsumexp(logits, ops.logical_or(positives, negatives))
        log_probability = logits - denominator[:, None]
        positive_count = ops.sum(ops.cast(positives, "float32"), axis=1)
        positive_sum = ops.sum(ops.where(positives, log_probability, ops.zeros_like(logits)), axis=1)
        losses = -positive_sum / ops.maximum(positive_count, 1.0)
        valid = ops.logical_and(ops.any(positives), ops.any(negatives))
        losses = ops.where(valid, losses, ops.zeros_like(losses))
        return mean_of_nonzero(losses, positive_count > 0)

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature})
        return config
