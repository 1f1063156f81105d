"""Triplets mined with the live model, for `build_triplet_model`."""

import typing

import keras
import numpy as np

from embedding_net.mining import selection
from embedding_net.evaluation.distances import check_distance
from embedding_net.mining.distances import pairwise_distances
from embedding_net.mining.registry import check_mining
from embedding_net.mining.rules import anchor_positive_pairs
from embedding_net.training.generators.base import MiningDataset, check_at_least


class TripletSelection(typing.NamedTuple):
    """The dataset indices of one batch of triplets, whether each qualified under the rule, its
    triplet value d(a, p) - d(a, n) + margin when mined, and the P x K draw it was mined from."""

    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    qualified: np.ndarray
    values: np.ndarray
    batch: np.ndarray


class TripletGenerator(MiningDataset):
    """Triplets mined with the live model for `build_triplet_model`, as the original library did.

    Each batch draws `classes_per_batch` classes and `images_per_class` images of each, embeds them in one call
    of the embedding model (`training=False`), and picks for every anchor-positive pair of the
    draw a negative by `mining` (`selection.select_negatives`):

    - `random`: any negative;
    - `hard`: the one of largest d(a, p) - d(a, n) + margin, if that is > 0;
    - `random_hard`: a random one with d(a, p) - d(a, n) + margin > 0;
    - `semi_hard`: a random one with 0 < d(a, n) - d(a, p) < margin (FaceNet).

    A batch has exactly `batch_size` triplets: when more pairs qualify, a random subset of them;
    when fewer do, all of them and then the hardest of the rest (largest value, each with its
    hardest negative). Output: `((anchors, positives, negatives), zeros)`, uint8 images and dummy
    float32 targets; train with `losses.TripletMarginLoss` with the same margin and distance.

    Args:
        images: uint8 [N, H, W, C].
        labels: integer [N].
        embedding_model: the model to mine with: the tower given to `build_triplet_model`.
        batch_size: triplets per batch, at most classes_per_batch * images_per_class * (images_per_class - 1) (the
            anchor-positive pairs of a draw); None: classes_per_batch * images_per_class.
        steps_per_epoch: batches per epoch (`__len__`); None: N // batch_size.
        classes_per_batch, images_per_class: the draw of each batch (P x K).
        mining: `random`, `hard`, `random_hard` or `semi_hard`.
        margin: the triplet margin, that of the loss.
        distance: `euclidean`, `squared_euclidean` or `cosine`, that of the loss.
        seed: integer >= 0.
        augment: None or `augment(images) -> images`, applied to the three image arrays.
    """

    def __init__(self, images, labels, embedding_model, batch_size=None, steps_per_epoch=None,
                 classes_per_batch=8, images_per_class=4, mining="semi_hard", margin=0.2,
                 distance="euclidean", seed=0, augment=None):
        check_at_least("classes_per_batch", classes_per_batch, 2)
        check_at_least("images_per_class", images_per_class, 2)
        if batch_size is None:
            batch_size = classes_per_batch * images_per_class
        super().__init__(images, labels, batch_size, steps_per_epoch, classes_per_batch, images_per_class, seed, augment)
        check_mining(mining, "triplets")
        check_distance(distance)
        if not margin >= 0:
            raise ValueError(f"`margin` must be >= 0. Received: {margin!r}")
        if embedding_model is None:
            raise ValueError("`embedding_model` is needed: triplets are mined with it")
        self._check_pclasses_per_batch()
        num_pairs = self.classes_per_batch * self.images_per_class * (self.images_per_class - 1)
        if self.batch_size > num_pairs:
            raise ValueError(
                f"`batch_size` must be at most the {num_pairs} anchor-positive pairs of a draw of "
                f"classes_per_batch={self.classes_per_batch} x images_per_class={self.images_per_class}. Received: {self.batch_size}")
        self.embedding_model = embedding_model
        self.mining = mining
        self.margin = float(margin)
        self.distance = distance

    def select(self, index):
        """The triplets of batch `index`, as dataset indices (see `TripletSelection`)."""
        rng = self._rng(index)
        batch = self._draw_pk(index)
        labels = self.labels[batch]
        distances = pairwise_distances(self._embed(batch), self.distance)
        anchors, positives = (keras.ops.convert_to_numpy(x) for x in anchor_positive_pairs(labels))
        keys = rng.random((len(anchors), len(batch)), dtype=np.float32)
        negatives, values, qualified = (keras.ops.convert_to_numpy(x) for x in selection.select_negatives(
            distances, labels, anchors, positives, self.margin, self.mining, keys))
        # Every anchor has negatives: the draw holds classes_per_batch >= 2 classes.
        chosen = np.flatnonzero(qualified)
        if len(chosen) >= self.batch_size:
            chosen = rng.choice(chosen, self.batch_size, replace=False)
        else:
            rest = np.flatnonzero(~qualified)
            rest = rest[np.argsort(-values[rest], kind="stable")]
            chosen = np.concatenate([chosen, rest[: self.batch_size - len(chosen)]])
        return TripletSelection(batch[anchors[chosen]], batch[positives[chosen]], batch[negatives[chosen]],
                                qualified[chosen], values[chosen], batch)

    def __getitem__(self, index):
        selection = self.select(index)
        images = tuple(self._output(indices) for indices in selection[:3])
        return images, np.zeros(self.batch_size, np.float32)
