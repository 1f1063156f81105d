"""Triplet losses: in-batch with online mining (`TripletLoss`), and on explicit triplets
from a mining generator (`TripletMarginLoss`)."""

import keras
from keras import ops

from embedding_net.losses.reduction import gather_across_replicas, safe_mean, scale_for_replicas
from embedding_net.losses.pair_based import with_memory
from embedding_net.losses.registry import register_loss
from embedding_net.mining.registry import check_mining, get_mining
from embedding_net.evaluation.distances import check_distance
from embedding_net.mining.distances import pairwise_distances, safe_sqrt


def triplet_loss(labels, embeddings, margin=0.2, mining_strategy="semi_hard", distance="euclidean",
                 soft_margin=False, sample_weight=None):
    """The in-batch triplet loss as a function; see `TripletLoss` for the definitions.

    `sample_weight` [B] weighs every term by the weight of its anchor, in the sum and in the
    count it is divided by, so uniform weights change nothing.
    """
    labels = ops.reshape(labels, (-1,))
    distances = pairwise_distances(embeddings, distance)
    weights = (ops.ones_like(distances[:, 0]) if sample_weight is None
               else ops.cast(ops.reshape(sample_weight, (-1,)), "float32"))

    def hinge(difference):  # difference = d(a, p) - d(a, n)
        return ops.softplus(difference) if soft_margin else ops.relu(difference + margin)

    total, count = get_mining(mining_strategy)(distances, labels, hinge, weights, margin, soft_margin)
    return safe_mean(total, count)


@register_loss("triplet", settings=("margin", "mining", "distance", "soft_margin", "cross_replica", "memory_size", "memory_warmup_steps"))
@keras.saving.register_keras_serializable(package="embedding_net")
class TripletLoss(keras.losses.Loss):
    """Triplet margin loss with online mining inside the batch.

    Called as `loss(labels[B], embeddings[B, D])`. With d the chosen distance and m the margin:

    - `all` (batch-all): every valid triplet (a, p, n), p != a of a's class, n of another
      class; the loss is the sum of max(d(a,p) - d(a,n) + m, 0) over triplets divided by the
      number of triplets whose value is > 0.
    - `hard` (batch-hard, Hermans et al. 2017): per anchor, its farthest positive and nearest
      negative; the mean of max(d_hp - d_hn + m, 0) over anchors that have a positive.
    - `semi_hard` (FaceNet, Schroff et al. 2015): for every positive pair (a, p), the nearest
      negative n with d(a,n) > d(a,p), or the farthest negative if there is none; the mean of
      max(d(a,p) - d(a,n) + m, 0) over positive pairs whose anchor has a negative.

    With `soft_margin`, max(x + m, 0) becomes the soft-margin log(1 + exp(x)) (Hermans et al.
    2017), which never reaches 0: batch-all then averages over every valid triplet.

    A batch without a valid pair or triplet gives 0, never NaN. `sample_weight` [B] weighs
    each term by its anchor's weight (see `triplet_loss`).

    Under a `tf.distribute` strategy the value is divided by the number of replicas (Keras'
    convention, see `embedding_net.training.distributed`); on one device nothing changes.

    Args:
        margin: the margin m, >= 0.
        mining: `all`, `hard` or `semi_hard`.
        distance: `euclidean`, `squared_euclidean` or `cosine` (1 - cosine similarity).
        soft_margin: use log(1 + exp(.)) instead of the hinge with `margin`.
        cross_replica: under a `tf.distribute` strategy, gather the labels and embeddings of
            every replica and mine the global batch, as one device would; otherwise each
            replica mines its own share of the batch.
    """

    def __init__(
        self,
        margin=0.2,
        mining="semi_hard",
        distance="euclidean",
        soft_margin=False,
        cross_replica=False,
        name="triplet_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        check_mining(mining)
        check_distance(distance)
        if not margin >= 0:
            raise ValueError(f"`margin` must be >= 0. Received: {margin!r}")
        self.margin = float(margin)
        self.mining = mining
        self.distance = distance
        self.soft_margin = bool(soft_margin)
        self.cross_replica = bool(cross_replica)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras' Loss.__call__ would cast the integer labels to float and apply the weights to
        # the reduced scalar; the weights belong to the anchors, inside the reduction.
        if self.cross_replica:
            y_true, y_pred, sample_weight = gather_across_replicas(y_true, y_pred, sample_weight)
        return scale_for_replicas(triplet_loss(y_true, y_pred, self.margin, self.mining, self.distance,
                                               self.soft_margin, sample_weight))

    def references_loss(self, labels, embeddings, memory_labels, memory_embeddings):
        """The loss of the batch's anchors against the batch followed by a cross-batch memory
        (`embedding_net.losses.memory`): the memory's rows weigh 0 as anchors, so they count as
        positives and negatives only; no gradient flows into the memory."""
        everything, every_label = with_memory(labels, embeddings, memory_labels, memory_embeddings)
        anchors = ops.concatenate([ops.ones_like(every_label[:ops.shape(embeddings)[0]], "float32"),
                                   ops.zeros_like(ops.cast(memory_labels, "float32"))], axis=0)
        return triplet_loss(every_label, everything, self.margin, self.mining, self.distance, self.soft_margin, anchors)

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "mining": self.mining, "distance": self.distance,
                       "soft_margin": self.soft_margin, "cross_replica": self.cross_replica})
        return config


def _row_distances(first, second, distance):
    """The `distance` between matching rows of `first` and `second` [B, D] -> [B], with the
    definitions of `embedding_net.mining.distances` (and its finite gradient at 0)."""
    first, second = ops.cast(first, "float32"), ops.cast(second, "float32")
    if distance == "cosine":
        def unit(x):
            return x / ops.sqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))
        return 1.0 - ops.sum(unit(first) * unit(second), axis=-1)
    squared = ops.sum(ops.square(first - second), axis=-1)
    return squared if distance == "squared_euclidean" else safe_sqrt(squared)


@register_loss("triplet", architecture="triplet", settings=("margin", "distance", "mining"))
@keras.saving.register_keras_serializable(package="embedding_net")
class TripletMarginLoss(keras.losses.Loss):
    """Triplet margin loss on explicit triplets, for `build_triplet_model`'s output.

    Called as `loss(ignored, stacked[B, 3, D])`, rows (anchor, positive, negative), as the
    triplets of `embedding_net.training.generators.TripletGenerator` (its targets are dummies): each
    triplet costs max(d(a, p) - d(a, n) + margin, 0), averaged over the batch.

    Args:
        margin: the margin, >= 0.
        distance: `euclidean`, `squared_euclidean` or `cosine`; the one the generator mines with.
    """

    def __init__(self, margin=0.2, distance="euclidean", name="triplet_margin_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        check_distance(distance)
        if not margin >= 0:
            raise ValueError(f"`margin` must be >= 0. Received: {margin!r}")
        self.margin = float(margin)
        self.distance = distance

    def call(self, y_true, y_pred):
        del y_true  # the triplet structure is the label
        anchors, positives, negatives = y_pred[:, 0], y_pred[:, 1], y_pred[:, 2]
        return ops.relu(_row_distances(anchors, positives, self.distance)
                        - _row_distances(anchors, negatives, self.distance) + self.margin)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "distance": self.distance})
        return config
