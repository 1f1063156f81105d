"""Multi-similarity loss (Wang et al. 2019), with its pair mining as an option."""

import keras
from keras import ops

from embedding_net.losses.pair_based import PairBasedLoss, masked_logsumexp
from embedding_net.losses.reduction import safe_mean
from embedding_net.losses.registry import register_loss


def multi_similarity_pairs(similarities, positives, negatives, epsilon):
    """The pairs kept by multi-similarity mining: a positive (a, p) when
    s(a, p) - epsilon < the largest s(a, n) of a's negatives, a negative (a, n) when
    s(a, n) + epsilon > the smallest s(a, p) of a's positives. An anchor without negatives keeps
    no positive, one without positives no negative (as pytorch-metric-learning's miner)."""
    hardest_negative = ops.max(ops.where(negatives, similarities, -1e30), axis=1, keepdims=True)
    hardest_positive = ops.min(ops.where(positives, similarities, 1e30), axis=1, keepdims=True)
    kept_positives = ops.logical_and(positives, similarities - epsilon < hardest_negative)
    kept_negatives = ops.logical_and(negatives, similarities + epsilon > hardest_positive)
    return kept_positives, kept_negatives


@register_loss("multi_similarity", settings=("alpha", "beta", "base", "mining_epsilon", "cross_replica",
                                           "memory_size", "memory_warmup_steps"))
@keras.saving.register_keras_serializable(package="embedding_net")
class MultiSimilarityLoss(PairBasedLoss):
    """Multi-similarity loss (Wang et al. 2019) on cosine similarities s.

    Per anchor a, with P(a) its positives and N(a) its negatives:
    L_a = 1/alpha log(1 + sum_{p in P(a)} exp(-alpha (s_ap - base)))
        + 1/beta  log(1 + sum_{n in N(a)} exp( beta (s_an - base))),
    averaged over every anchor of the batch (pytorch-metric-learning's mean reducer; an anchor
    without pairs adds 0). With `mining_epsilon`, only the pairs that multi-similarity mining
    keeps count (`multi_similarity_pairs`); None takes every pair.

    Args:
        alpha: the weight of positive pairs, > 0.
        beta: the weight of negative pairs, > 0.
        base: the similarity around which pairs are pushed, in [-1, 1].
        mining_epsilon: None, or the mining margin, >= 0 (the paper's 0.1).
        cross_replica: see `PairBasedLoss`.
    """

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, mining_epsilon=None, cross_replica=False,
                 name="multi_similarity_loss", **kwargs):
        super().__init__(cross_replica=cross_replica, name=name, **kwargs)
        for key, value in (("alpha", alpha), ("beta", beta)):
            if not value > 0:
                raise ValueError(f"`{key}` must be > 0. Received: {value!r}")
        if not -1 <= base <= 1:
            raise ValueError(f"`base` must be in [-1, 1]. Received: {base!r}")
        if mining_epsilon is not None and not mining_epsilon >= 0:
            raise ValueError(f"`mining_epsilon` must be None or >= 0. Received: {mining_epsilon!r}")
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)
        self.mining_epsilon = None if mining_epsilon is None else float(mining_epsilon)

    def pair_loss(self, similarities, positives, negatives):
        if self.mining_epsilon is not None:
            positives, negatives = multi_similarity_pairs(similarities, positives, negatives, self.mining_epsilon)
        positive = masked_logsumexp(-self.alpha * (similarities - self.base), positives, add_one=True) / self.alpha
        negative = masked_logsumexp(self.beta * (similarities - self.base), negatives, add_one=True) / self.beta
        return safe_mean(ops.sum(positive + negative), ops.shape(similarities)[0])

    def get_config(self):
        config = super().get_config()
        config.update({"alpha": self.alpha, "beta": self.beta, "base": self.base,
                       "mining_epsilon": self.mining_epsilon})
        return config
