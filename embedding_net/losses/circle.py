"""Circle loss (Sun et al. 2020), pair-based form."""

import keras
from keras import ops

from embedding_net.losses.pair_based import PairBasedLoss, masked_logsumexp
from embedding_net.losses.reduction import mean_of_nonzero
from embedding_net.losses.registry import register_loss
from embedding_net.mining import rules


@register_loss("circle", settings=("margin", "gamma", "cross_replica", "memory_size", "memory_warmup_steps"))
@keras.saving.register_keras_serializable(package="embedding_net")
class CircleLoss(PairBasedLoss):
    """Circle loss on cosine similarities s, with relaxation m and scale gamma.

    Each pair gets its own weight, held constant in the gradient: positives
    alpha_p = max(1 + m - s_ap, 0), negatives alpha_n = max(s_an + m, 0). Per anchor,
    L_a = softplus(logsumexp_p(-gamma alpha_p (s_ap - (1 - m)))
                   + logsumexp_n(gamma alpha_n (s_an - m))),
    0 for an anchor without a positive or without a negative; the loss is the mean over the
    anchors whose L_a > 0 (pytorch-metric-learning's default reducer).

    Args:
        margin: m, the relaxation, in [0, 1).
        gamma: the scale, > 0.
        cross_replica: see `PairBasedLoss`.
    """

    def __init__(self, margin=0.4, gamma=80.0, cross_replica=False, name="circle_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        if not 0 <= margin < 1:
            raise ValueError(f"`margin` must be in [0, 1). Received: {margin!r}")
        if not gamma > 0:
            raise ValueError(f"`gamma` must be > 0. Received: {gamma!r}")
        self.margin, self.gamma = float(margin), float(gamma)

    def pair_loss(self, similarities, positives, negatives):
        # The positives on each anchor's positive slots [B, M] (M = K - 1 in a P x K batch), not
        # on B x B: at B = 8,192 each B x B temporary is 256 MiB, and their logits need several.
        positive_similarities, in_use = rules.positive_slot_distances(similarities, positives)
        positive_logits = (-self.gamma * ops.relu(1.0 + self.margin - ops.stop_gradient(positive_similarities))
                           * (positive_similarities - (1.0 - self.margin)))
        negative_logits = (self.gamma * ops.relu(ops.stop_gradient(similarities) + self.margin)
                           * (similarities - self.margin))
        losses = ops.softplus(masked_logsumexp(positive_logits, in_use) + masked_logsumexp(negative_logits, negatives))
        both = ops.logical_and(ops.any(in_use, axis=1), ops.any(negatives, axis=1))
        return mean_of_nonzero(losses, both)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "gamma": self.gamma})
        return config
