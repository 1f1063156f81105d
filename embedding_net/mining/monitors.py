"""Training metrics that warn of collapse: mean positive and negative distances and the
fraction of active triplets, averaged over the batches of an epoch.

When every embedding collapses to one point, both mean distances fall to 0 together; when the
loss stops learning, the active fraction falls to 0 while positives stay far from anchors.
"""

import keras
from keras import ops

from embedding_net.mining import rules
from embedding_net.mining.batch_all import active_fraction
from embedding_net.evaluation.distances import check_distance
from embedding_net.mining.distances import pairwise_distances


class _BatchMonitor(keras.metrics.Mean):
    """A running mean of one value computed from (labels, embeddings) of each batch."""

    def __init__(self, distance="euclidean", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        check_distance(distance)
        self.distance = distance

    def batch_value(self, labels, distances):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(y_true, (-1,))
        value, count = self.batch_value(labels, pairwise_distances(y_pred, self.distance))
        # A batch without any pair of the kind measured adds nothing to the mean.
        weight = ops.cast(count > 0, "float32")
        return super().update_state(value, sample_weight=weight)

    def get_config(self):
        config = super().get_config()
        config.update({"distance": self.distance})
        return config


def _masked_mean(distances, mask):
    mask = ops.cast(mask, "float32")
    count = ops.sum(mask)
    return ops.sum(distances * mask) / ops.maximum(count, 1.0), count


@keras.saving.register_keras_serializable(package="embedding_net")
class PositiveDistance(_BatchMonitor):
    """Mean distance between embeddings of the same class (pairs a != p)."""

    def __init__(self, distance="euclidean", name="positive_distance", **kwargs):
        super().__init__(distance=distance, name=name, **kwargs)

    def batch_value(self, labels, distances):
        return _masked_mean(distances, rules.positive_mask(labels))


@keras.saving.register_keras_serializable(package="embedding_net")
class NegativeDistance(_BatchMonitor):
    """Mean distance between embeddings of different classes."""

    def __init__(self, distance="euclidean", name="negative_distance", **kwargs):
        super().__init__(distance=distance, name=name, **kwargs)

    def batch_value(self, labels, distances):
        return _masked_mean(distances, rules.negative_mask(labels))


@keras.saving.register_keras_serializable(package="embedding_net")
class ActiveTriplets(_BatchMonitor):
    """Fraction of valid triplets (a, p, n) with d(a,p) - d(a,n) + margin > 0: the ones that
    still produce a gradient under batch-all mining.

    Args:
        margin: the triplet margin of the loss being monitored.
    """

    def __init__(self, margin=0.2, distance="euclidean", name="active_triplets", **kwargs):
        super().__init__(distance=distance, name=name, **kwargs)
        self.margin = float(margin)

    def batch_value(self, labels, distances):
        return active_fraction(distances, labels, self.margin)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin})
        return config


def collapse_monitors(margin=0.2, distance="euclidean"):
    """The three monitors, ready for `model.compile(metrics=...)`."""
    return [PositiveDistance(distance), NegativeDistance(distance), ActiveTriplets(margin, distance)]
