"""Contrastive losses (Hadsell, Chopra & LeCun 2006): on the distances of a Siamese model's
pairs (`ContrastiveLoss`), and over every pair of a P x K batch (`BatchContrastiveLoss`)."""

import keras
from keras import ops

from embedding_net.losses.pair_based import with_memory
from embedding_net.losses.reduction import (gather_across_replicas, mean_of_hinges_below, mean_of_nonzero,
                                           scale_for_replicas)
from embedding_net.losses.registry import register_loss
from embedding_net.mining import rules
from embedding_net.evaluation.distances import check_distance
from embedding_net.mining.distances import pairwise_distances


@register_loss("contrastive", architecture="siamese", settings=("margin", "mining", "distance"))
@keras.saving.register_keras_serializable(package="embedding_net")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss on pair distances (Hadsell, Chopra & LeCun 2006).

    Called as `loss(pair_labels[B], distances[B])`, pair label 1 = same class:
    L = y d^2 + (1 - y) max(margin - d, 0)^2, averaged over the pairs.

    Args:
        margin: the distance beyond which a pair of different classes costs nothing, > 0.
    """

    def __init__(self, margin=1.0, name="contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not margin > 0:
            raise ValueError(f"`margin` must be > 0. Received: {margin!r}")
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        same = ops.cast(ops.reshape(y_true, (-1,)), "float32")
        distances = ops.cast(ops.reshape(y_pred, (-1,)), "float32")
        losses = same * ops.square(distances) + (1.0 - same) * ops.square(ops.relu(self.margin - distances))
        return ops.mean(losses)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin})
        return config


@register_loss("contrastive", settings=("positive_margin", "negative_margin", "distance", "cross_replica", "memory_size", "memory_warmup_steps"))
@keras.saving.register_keras_serializable(package="embedding_net")
class BatchContrastiveLoss(keras.losses.Loss):
    """Contrastive loss over every pair of a P x K batch, with two margins.

    Called as `loss(labels[B], embeddings[B, D])`. Positive pairs (a != p, same class) cost
    max(d - positive_margin, 0), negative pairs max(negative_margin - d, 0); the loss is the
    mean of the non-zero positive terms plus the mean of the non-zero negative terms (0 when
    there are none), so the pairs that still violate a margin carry the loss.

    Under a `tf.distribute` strategy the value is divided by the number of replicas (Keras'
    convention, see `embedding_net.training.distributed`); on one device nothing changes.

    Args:
        positive_margin: distance under which same-class pairs cost nothing, >= 0.
        negative_margin: distance beyond which different-class pairs cost nothing.
        distance: `euclidean`, `squared_euclidean` or `cosine`.
        cross_replica: under a `tf.distribute` strategy, gather the labels and embeddings of
            every replica and take the pairs of the global batch, as one device would;
            otherwise each replica takes the pairs of its own share.
    """

    def __init__(self, positive_margin=0.0, negative_margin=1.0, distance="euclidean",
                 cross_replica=False, name="batch_contrastive_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        check_distance(distance)
        if not 0 <= positive_margin < negative_margin:
            raise ValueError("Margins must satisfy 0 <= positive_margin < negative_margin. "
                             f"Received: {positive_margin!r}, {negative_margin!r}")
        self.positive_margin = float(positive_margin)
        self.negative_margin = float(negative_margin)
        self.distance = distance
        self.cross_replica = bool(cross_replica)

    def call(self, y_true, y_pred):
        if self.cross_replica:
            y_true, y_pred, _ = gather_across_replicas(y_true, y_pred)
        # A scalar passes Keras' reduction untouched, so the replica scaling is done here.
        return scale_for_replicas(self._pair_terms(ops.reshape(y_true, (-1,)), y_pred))

    def references_loss(self, labels, embeddings, memory_labels, memory_embeddings):
        """The loss of the batch's anchors against the batch followed by a cross-batch memory
        (`embedding_net.losses.memory`); no gradient flows into the memory."""
        everything, every_label = with_memory(labels, embeddings, memory_labels, memory_embeddings)
        anchors = ops.arange(ops.shape(every_label)[0]) < ops.shape(embeddings)[0]
        return self._pair_terms(every_label, everything, anchors[:, None])

    def _pair_terms(self, labels, embeddings, anchors=True):
        """The mean of the non-zero positive terms plus that of the negative ones, over pairs
        whose first member is an anchor (`anchors`: a boolean column, or every row)."""
        distances = pairwise_distances(embeddings, self.distance)
        positives = ops.logical_and(rules.positive_mask(labels), anchors)
        negatives = ops.logical_and(rules.negative_mask(labels), anchors)
        # The positive pairs on each anchor's positive slots [B, M] (M = K - 1 in a P x K batch),
        # not on B x B: at B = 8,192 each B x B temporary is 256 MiB.
        positive_distances, in_use = rules.positive_slot_distances(distances, positives)
        return (mean_of_nonzero(ops.relu(positive_distances - self.positive_margin), in_use)
                + mean_of_hinges_below(distances, negatives, self.negative_margin))

    def get_config(self):
        config = super().get_config()
        config.update({"positive_margin": self.positive_margin, "negative_margin": self.negative_margin,
                       "distance": self.distance, "cross_replica": self.cross_replica})
        return config


# The Siamese model's `l1` head outputs the probability that a pair is of one class (Koch et al.
# 2015): a classifier of pairs, trained with Keras' own binary cross-entropy.
register_loss("binary_crossentropy", architecture="siamese", settings=("mining",))(keras.losses.BinaryCrossentropy)
