"""Pair and triplet generators that mine with the live model (`keras.utils.PyDataset`).

Both take decoded images (uint8 [N, H, W, C]) and integer labels, or an `ImageFolder` and its
decoded images through `from_folder`, and give fixed-size batches of uint8 images matching the
inputs of `build_siamese_model` and `build_triplet_model`.

Mining calls the embedding model the generator was given, not a copy: weights trained, or
restored from a checkpoint, into that model are the ones the next batch is mined with. Keras
prefetches a few batches, so a batch may be mined with weights a few steps old. The model is
called in the main process: `workers` and `use_multiprocessing` keep PyDataset's defaults.

Reproducibility: the random draws of batch `index` depend only on `(seed, epoch, index)`. The
attribute `epoch` starts at 0 and advances in `on_epoch_begin` of every epoch but the first the
generator serves (Keras 3 also calls `on_epoch_end` once before the first epoch, so counting those
would be off by one): to resume at epoch k, set `epoch = k` before `fit(..., initial_epoch=k)`.
What a mining rule selects depends on the model's weights as well.

An optional `augment(images) -> images` callable is applied to every image array of the output,
after mining (the model mines on the images as stored).
"""

import typing

import keras
import numpy as np

from embedding_net.mining import rules as mining
from embedding_net.mining.distances import check_distance, pairwise_distances
from embedding_net.data.sampling import class_table

PAIR_MINING = ("random", "hard")


def _check_data(images, labels):
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError("`images` must be a uint8 array [N, H, W, C]. Received: "
                         f"{images.dtype} array of shape {images.shape}")
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) or (
            len(labels) and labels.min() < 0):
        raise ValueError("`labels` must be non-negative integers, one per image. Received: "
                         f"{labels.dtype} array of shape {labels.shape} for {len(images)} images")
    return images, labels.astype(np.int32)


def _check_at_least(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {value!r}")


class _MiningDataset(keras.utils.PyDataset):
    """What both generators share: data, P x K draws, per-batch random generators, epochs."""

    def __init__(self, images, labels, batch_size, steps_per_epoch, k_classes, k_samples, seed, augment):
        super().__init__()  # workers / use_multiprocessing stay at their defaults: see above
        self.images, self.labels = _check_data(images, labels)
        _check_at_least("batch_size", batch_size, 1)
        _check_at_least("k_classes", k_classes, 2)
        _check_at_least("k_samples", k_samples, 2)
        _check_at_least("seed", seed, 0)
        if steps_per_epoch is None:
            steps_per_epoch = max(1, len(self.images) // batch_size)
        _check_at_least("steps_per_epoch", steps_per_epoch, 1)
        if augment is not None and not callable(augment):
            raise ValueError(f"`augment` must be None or a callable. Received: {augment!r}")
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.k_classes = int(k_classes)
        self.k_samples = int(k_samples)
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0
        self._epoch_started = False
        num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self._table, self._counts = class_table(self.labels, max(num_classes, 1))

    @classmethod
    def from_folder(cls, folder, images, **kwargs):
        """The generator over an `ImageFolder` and its decoded images (`images[i]` is the image of
        `folder.paths[i]`); `kwargs` are the constructor's other arguments."""
        if len(images) != len(folder):
            raise ValueError(f"`images` must hold one image per path of the folder: {len(folder)}. "
                             f"Received: {len(images)}")
        return cls(images, folder.labels, **kwargs)

    def __len__(self):
        return self.steps_per_epoch

    def on_epoch_begin(self):
        if self._epoch_started:
            self.epoch += 1
        self._epoch_started = True

    def _rng(self, index):
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _draw_pk(self, rng):
        """`k_classes` distinct classes with at least 2 images, `k_samples` images of each (without
        repetition while the class has enough), as dataset indices [k_classes * k_samples]."""
        eligible = np.flatnonzero(self._counts >= 2)
        classes = rng.choice(eligible, self.k_classes, replace=False)
        counts = self._counts[classes]
        keys = rng.random((self.k_classes, self._table.shape[1]))
        keys[np.arange(self._table.shape[1])[None, :] >= counts[:, None]] = 2.0  # padding last
        slots = np.take_along_axis(np.argsort(keys, axis=1),
                                   np.arange(self.k_samples)[None, :] % counts[:, None], axis=1)
        return self._table[classes[:, None], slots].reshape(-1)

    def _check_pk_classes(self):
        eligible = int((self._counts >= 2).sum())
        if eligible < self.k_classes:
            raise ValueError(f"`k_classes` ({self.k_classes}) exceeds the number of classes with at "
                             f"least 2 images ({eligible})")

    def _embed(self, indices):
        """Embeddings of `images[indices]` with the current weights, in one batched call."""
        return self.embedding_model(self.images[indices], training=False)

    def _output(self, indices):
        images = self.images[indices]
        return images if self.augment is None else self.augment(images)


class PairSelection(typing.NamedTuple):
    """The dataset indices of one batch of pairs; `pool` is the mined pool (None for `random`)."""

    first: np.ndarray
    second: np.ndarray
    pair_labels: np.ndarray
    pool: typing.Optional[np.ndarray]


class PairGenerator(_MiningDataset):
    """Balanced pairs for `build_siamese_model`: `((first_images, second_images), pair_labels)`.

    Pair label 1 = same class. A batch holds `batch_size // 2` positive pairs followed by
    `batch_size - batch_size // 2` negative pairs: an odd batch has one more negative pair.

    Mining:

    - `random`: a positive pair is two distinct images of a class drawn uniformly among the
      classes with at least 2 images; a negative pair, one image of each of two distinct classes
      drawn uniformly. Needs no model.
    - `hard`: a pool of `k_classes` x `k_samples` images is embedded with the live model; the
      batch takes the farthest positive pairs and the nearest negative pairs of the pool
      (`mining.hardest_pairs`, each unordered pair at most once).

    Args:
        images: uint8 [N, H, W, C].
        labels: integer [N].
        batch_size: pairs per batch.
        steps_per_epoch: batches per epoch (`__len__`); None: N // batch_size.
        mining: `random` or `hard`.
        embedding_model: the model to mine with (needed for `hard`), e.g. the tower given to
            `build_siamese_model`.
        k_classes, k_samples: the pool of `hard` mining.
        distance: `euclidean`, `squared_euclidean` or `cosine`, that of the Siamese head.
        seed: integer >= 0.
        augment: None or `augment(images) -> images`, applied to both image arrays.
    """

    def __init__(self, images, labels, batch_size=32, steps_per_epoch=None, mining="random",
                 embedding_model=None, k_classes=8, k_samples=4, distance="euclidean", seed=0,
                 augment=None):
        super().__init__(images, labels, batch_size, steps_per_epoch, k_classes, k_samples, seed, augment)
        if mining not in PAIR_MINING:
            raise ValueError(f"`mining` must be one of {', '.join(PAIR_MINING)}. Received: {mining!r}")
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
        if mining == "hard":
            if embedding_model is None:
                raise ValueError("`mining` 'hard' needs the `embedding_model` to mine with")
            self._check_pk_classes()
            pool_positive = self.k_classes * self.k_samples * (self.k_samples - 1) // 2
            pool_negative = self.k_classes * (self.k_classes - 1) // 2 * self.k_samples ** 2
            if self.num_positive > pool_positive or self.num_negative > pool_negative:
                raise ValueError(
                    f"a pool of k_classes={self.k_classes} x k_samples={self.k_samples} holds "
                    f"{pool_positive} positive and {pool_negative} negative pairs, fewer than the "
                    f"{self.num_positive} and {self.num_negative} a batch of {self.batch_size} needs")

    def select(self, index):
        """The pairs of batch `index`, as dataset indices (see `PairSelection`)."""
        rng = self._rng(index)
        pair_labels = np.concatenate([np.ones(self.num_positive, np.float32),
                                      np.zeros(self.num_negative, np.float32)])
        if self.mining == "random":
            first, second = self._random_pairs(rng)
            return PairSelection(first, second, pair_labels, None)
        pool = self._draw_pk(rng)
        distances = pairwise_distances(self._embed(pool), self.distance)
        positive_pairs, negative_pairs = mining.hardest_pairs(
            distances, self.labels[pool], self.num_positive, self.num_negative)
        pairs = np.concatenate([keras.ops.convert_to_numpy(positive_pairs),
                                keras.ops.convert_to_numpy(negative_pairs)])
        return PairSelection(pool[pairs[:, 0]], pool[pairs[:, 1]], pair_labels, pool)

    def _random_pairs(self, rng):
        def image_of(classes, offset=None):
            counts = self._counts[classes]
            if offset is None:
                return (rng.random(len(classes)) * counts).astype(np.int64)
            # A second, different image: a uniform slot among the count - 1 others.
            other = (rng.random(len(classes)) * (counts - 1)).astype(np.int64)
            return other + (other >= offset)

        with_pairs = np.flatnonzero(self._counts >= 2)
        classes = rng.choice(with_pairs, self.num_positive)
        slot = image_of(classes)
        positives = (self._table[classes, slot], self._table[classes, image_of(classes, slot)])
        nonempty = np.flatnonzero(self._counts > 0)
        first_class = rng.integers(len(nonempty), size=self.num_negative)
        second_class = (first_class + rng.integers(1, len(nonempty), size=self.num_negative)) % len(nonempty)
        first_class, second_class = nonempty[first_class], nonempty[second_class]
        negatives = (self._table[first_class, image_of(first_class)],
                     self._table[second_class, image_of(second_class)])
        return np.concatenate([positives[0], negatives[0]]), np.concatenate([positives[1], negatives[1]])

    def __getitem__(self, index):
        selection = self.select(index)
        return (self._output(selection.first), self._output(selection.second)), selection.pair_labels


class TripletSelection(typing.NamedTuple):
    """The dataset indices of one batch of triplets, whether each qualified under the rule, its
    triplet value d(a, p) - d(a, n) + margin when mined, and the P x K draw it was mined from."""

    anchors: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    qualified: np.ndarray
    values: np.ndarray
    batch: np.ndarray


class TripletGenerator(_MiningDataset):
    """Triplets mined with the live model for `build_triplet_model`, as the original library did.

    Each batch draws `k_classes` classes and `k_samples` images of each, embeds them in one call
    of the embedding model (`training=False`), and picks for every anchor-positive pair of the
    draw a negative by `negatives_selection_mode` (`mining.select_negatives`):

    - `random`: any negative;
    - `hardest`: the one of largest d(a, p) - d(a, n) + margin, if that is > 0;
    - `random_hard`: a random one with d(a, p) - d(a, n) + margin > 0;
    - `semihard`: a random one with 0 < d(a, n) - d(a, p) < margin (FaceNet).

    A batch has exactly `batch_size` triplets: when more pairs qualify, a random subset of them;
    when fewer do, all of them and then the hardest of the rest (largest value, each with its
    hardest negative). Output: `((anchors, positives, negatives), zeros)`, uint8 images and dummy
    float32 targets; train with `losses.TripletMarginLoss` with the same margin and distance.

    Args:
        images: uint8 [N, H, W, C].
        labels: integer [N].
        embedding_model: the model to mine with: the tower given to `build_triplet_model`.
        batch_size: triplets per batch, at most k_classes * k_samples * (k_samples - 1) (the
            anchor-positive pairs of a draw); None: k_classes * k_samples.
        steps_per_epoch: batches per epoch (`__len__`); None: N // batch_size.
        k_classes, k_samples: the draw of each batch (P x K).
        negatives_selection_mode: `random`, `hardest`, `random_hard` or `semihard`.
        margin: the triplet margin, that of the loss.
        distance: `euclidean`, `squared_euclidean` or `cosine`, that of the loss.
        seed: integer >= 0.
        augment: None or `augment(images) -> images`, applied to the three image arrays.
    """

    def __init__(self, images, labels, embedding_model, batch_size=None, steps_per_epoch=None,
                 k_classes=8, k_samples=4, negatives_selection_mode="semihard", margin=0.2,
                 distance="euclidean", seed=0, augment=None):
        _check_at_least("k_classes", k_classes, 2)
        _check_at_least("k_samples", k_samples, 2)
        if batch_size is None:
            batch_size = k_classes * k_samples
        super().__init__(images, labels, batch_size, steps_per_epoch, k_classes, k_samples, seed, augment)
        mining.check_negatives_selection_mode(negatives_selection_mode)
        check_distance(distance)
        if not margin >= 0:
            raise ValueError(f"`margin` must be >= 0. Received: {margin!r}")
        if embedding_model is None:
            raise ValueError("`embedding_model` is needed: triplets are mined with it")
        self._check_pk_classes()
        num_pairs = self.k_classes * self.k_samples * (self.k_samples - 1)
        if self.batch_size > num_pairs:
            raise ValueError(
                f"`batch_size` must be at most the {num_pairs} anchor-positive pairs of a draw of "
                f"k_classes={self.k_classes} x k_samples={self.k_samples}. Received: {self.batch_size}")
        self.embedding_model = embedding_model
        self.negatives_selection_mode = negatives_selection_mode
        self.margin = float(margin)
        self.distance = distance

    def select(self, index):
        """The triplets of batch `index`, as dataset indices (see `TripletSelection`)."""
        rng = self._rng(index)
        batch = self._draw_pk(rng)
        labels = self.labels[batch]
        distances = pairwise_distances(self._embed(batch), self.distance)
        anchors, positives = (keras.ops.convert_to_numpy(x) for x in mining.anchor_positive_pairs(labels))
        keys = rng.random((len(anchors), len(batch)), dtype=np.float32)
        negatives, values, qualified = (keras.ops.convert_to_numpy(x) for x in mining.select_negatives(
            distances, labels, anchors, positives, self.margin, self.negatives_selection_mode, keys))
        # Every anchor has negatives: the draw holds k_classes >= 2 classes.
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
