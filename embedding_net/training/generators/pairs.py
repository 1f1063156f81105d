"""Balanced pairs mined with the live model, for `build_siamese_model`."""

import typing

import keras
import numpy as np

from embedding_net.evaluation.distances import check_distance
from embedding_net.mining.distances import pairwise_distances
from embedding_net.mining.registry import check_mining, mining_entry
from embedding_net.training.generators.base import MiningDataset


class PairSelection(typing.NamedTuple):
    """The dataset indices of one batch of pairs; `pool` is the mined pool (None for `random`)."""

    first: np.ndarray
    second: np.ndarray
    pair_labels: np.ndarray
    pool: typing.Optional[np.ndarray]


class PairGenerator(MiningDataset):
    """Balanced pairs for `build_siamese_model`: `((first_images, second_images), pair_labels)`.

    Pair label 1 = same class. A batch holds `batch_size // 2` positive pairs followed by
    `batch_size - batch_size // 2` negative pairs: an odd batch has one more negative pair.

    Mining:

    - `random`: a positive pair is two distinct images of a class drawn uniformly among the
      classes with at least 2 images; a negative pair, one image of each of two distinct classes
      drawn uniformly (`selection.random_pairs`). Needs no model.
    - `hard`: a pool of `classes_per_batch` x `images_per_class` images is embedded with the live model; the
      batch takes the farthest positive pairs and the nearest negative pairs of the pool
      (`selection.hardest_pairs`, each unordered pair at most once).

    Args:
        images: uint8 [N, H, W, C].
        labels: integer [N].
        batch_size: pairs per batch.
        steps_per_epoch: batches per epoch (`__len__`); None: N // batch_size.
        mining: `random` or `hard`.
        embedding_model: the model to mine with (needed for `hard`), e.g. the tower given to
            `build_siamese_model`.
        classes_per_batch, images_per_class: the pool of `hard` mining.
        distance: `euclidean`, `squared_euclidean` or `cosine`, that of the Siamese head.
        seed: integer >= 0.
        augment: None or `augment(images) -> images`, applied to both image arrays.
    """

    def __init__(self, images, labels, batch_size=32, steps_per_epoch=None, mining="random",
                 embedding_model=None, classes_per_batch=8, images_per_class=4, distance="euclidean", seed=0,
                 augment=None):
        super().__init__(images, labels, batch_size, steps_per_epoch, classes_per_batch, images_per_class, seed, augment)
        check_mining(mining, "pairs")
        check_distance(distance)
        self.mining = mining
        self.embedding_model = embedding_model
        self.distance = distance
        self.num_positive = self.batch_size // 2
        self.num_negative = self.batch_size - self.num_positive
        nonempty = int((self._counts > 0).sum())
        if nonempty < 2 or not (self._counts >= 2).any():
            largest = int(self._counts.max(initial=0))
            raise ValueError("pairs need at least 2 classes and a class with at least 2 images. "
                             f"Received: {nonempty} classes, the largest of {largest} images")
        if mining_entry(mining, "pairs").info["needs_model"]:
            if embedding_model is None:
                raise ValueError(f"`mining` {mining!r} needs the `embedding_model` to mine with")
            self._check_pclasses_per_batch()
            pool_positive = self.classes_per_batch * self.images_per_class * (self.images_per_class - 1) // 2
            pool_negative = self.classes_per_batch * (self.classes_per_batch - 1) // 2 * self.images_per_class ** 2
            if self.num_positive > pool_positive or self.num_negative > pool_negative:
                raise ValueError(
                    f"a pool of classes_per_batch={self.classes_per_batch} x images_per_class={self.images_per_class} holds "
                    f"{pool_positive} positive and {pool_negative} negative pairs, fewer than the "
                    f"{self.num_positive} and {self.num_negative} a batch of {self.batch_size} needs")

    def select(self, index):
        """The pairs of batch `index`, as dataset indices (see `PairSelection`)."""
        rng = self._rng(index)
        pair_labels = np.concatenate([np.ones(self.num_positive, np.float32),
                                      np.zeros(self.num_negative, np.float32)])
        rule = mining_entry(self.mining, "pairs")
        if not rule.info["needs_model"]:
            first, second = rule.obj(self._table, self._counts, self.num_positive, self.num_negative, rng)
            return PairSelection(first, second, pair_labels, None)
        pool = self._draw_pk(index)
        distances = pairwise_distances(self._embed(pool), self.distance)
        positive_pairs, negative_pairs = rule.obj(
            distances, self.labels[pool], self.num_positive, self.num_negative)
        pairs = np.concatenate([keras.ops.convert_to_numpy(positive_pairs),
                                keras.ops.convert_to_numpy(negative_pairs)])
        return PairSelection(pool[pairs[:, 0]], pool[pairs[:, 1]], pair_labels, pool)

    def __getitem__(self, index):
        selection = self.select(index)
        return (self._output(selection.first), self._output(selection.second)), selection.pair_labels
