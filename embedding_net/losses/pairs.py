"""Losses on (labels, embeddings) of a P x K batch: each composes a distance with a mining rule."""

import keras
from keras import ops

from embedding_net.mining import rules
from embedding_net.mining.batch_all import batch_all_sums
from embedding_net.training.distributed import gather_across_replicas, scale_for_replicas
from embedding_net.mining.distances import check_distance, pairwise_distances, safe_sqrt


def _safe_mean(total, count):
    """`total / count`, and 0 (not NaN) when `count` is 0."""
    count = ops.cast(count, "float32")
    return ops.where(count > 0, total / ops.maximum(count, 1.0), ops.zeros_like(total))


def triplet_loss(labels, embeddings, margin=0.2, mining_strategy="semi_hard", distance="euclidean",
                 soft_margin=False, sample_weight=None):
    """The in-batch triplet loss as a function; see `TripletLoss` for the definitions.

    `sample_weight` [B] weighs every term by the weight of its anchor, in the sum and in the
    count it is divided by, so uniform weights change nothing.
    """
    labels = ops.reshape(labels, (-1,))
    distances = pairwise_distances(embeddings, distance)
    positives = rules.positive_mask(labels)
    negatives = rules.negative_mask(labels)
    weights = (ops.ones_like(distances[:, 0]) if sample_weight is None
               else ops.cast(ops.reshape(sample_weight, (-1,)), "float32"))

    def hinge(difference):  # difference = d(a, p) - d(a, n)
        return ops.softplus(difference) if soft_margin else ops.relu(difference + margin)

    if mining_strategy == "all":
        # Never the B^3 triplets at once: see embedding_net.mining.batch_all.
        total, active = batch_all_sums(distances, labels, margin, soft_margin, weights)
        return _safe_mean(total, active)
    if mining_strategy == "hard":
        has_positive = ops.any(positives, axis=1)
        has_triplet = ops.logical_and(has_positive, ops.any(negatives, axis=1))
        losses = hinge(rules.hardest_positive(distances, positives) - rules.hardest_negative(distances, negatives))
        losses = ops.where(has_triplet, losses, ops.zeros_like(losses))
        return _safe_mean(ops.sum(losses * weights), ops.sum(ops.cast(has_positive, "float32") * weights))
    if mining_strategy == "semi_hard":
        negative_distances, has_negative = rules.semi_hard_negative(distances, positives, negatives)
        valid = ops.logical_and(positives, has_negative[:, None])
        losses = ops.where(valid, hinge(distances - negative_distances), ops.zeros_like(distances))
        counted = ops.cast(valid, "float32") * weights[:, None]
        return _safe_mean(ops.sum(losses * weights[:, None]), ops.sum(counted))
    rules.check_mining(mining_strategy)


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
        rules.check_mining(mining)
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

    def call(self, y_true, y_pred):
        return self(y_true, y_pred)

    def get_config(self):
        config = super().get_config()
        config.update({"margin": self.margin, "mining": self.mining, "distance": self.distance,
                       "soft_margin": self.soft_margin, "cross_replica": self.cross_replica})
        return config


def _mean_of_nonzero(values, mask):
    """Mean of `values` over masked entries that are > 0 (0 if none): pairs already satisfied
    do not dilute the loss, as pytorch-metric-learning's AvgNonZeroReducer."""
    values = ops.where(mask, values, ops.zeros_like(values))
    return _safe_mean(ops.sum(values), ops.sum(ops.cast(values > 0, "float32")))


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
        labels = ops.reshape(y_true, (-1,))
        distances = pairwise_distances(y_pred, self.distance)
        positive = _mean_of_nonzero(ops.relu(distances - self.positive_margin), rules.positive_mask(labels))
        negative = _mean_of_nonzero(ops.relu(self.negative_margin - distances), rules.negative_mask(labels))
        # A scalar passes Keras' reduction untouched, so the replica scaling is done here.
        return scale_for_replicas(positive + negative)

    def get_config(self):
        config = super().get_config()
        config.update({"positive_margin": self.positive_margin, "negative_margin": self.negative_margin,
                       "distance": self.distance, "cross_replica": self.cross_replica})
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
