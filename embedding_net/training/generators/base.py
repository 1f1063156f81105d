"""What both mining generators share: the data, the P x K draws of the one sampler, per-batch
random generators and the epoch counter (see `embedding_net.training.generators`)."""

import keras
import numpy as np

from embedding_net.data.sampling import PKSampler, class_table


def check_data(images, labels):
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


def check_at_least(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {value!r}")


class MiningDataset(keras.utils.PyDataset):
    """What both generators share: data, P x K draws, per-batch random generators, epochs."""

    def __init__(self, images, labels, batch_size, steps_per_epoch, classes_per_batch, images_per_class, seed, augment):
        super().__init__()  # workers / use_multiprocessing stay at their defaults: see above
        self.images, self.labels = check_data(images, labels)
        check_at_least("batch_size", batch_size, 1)
        check_at_least("classes_per_batch", classes_per_batch, 2)
        check_at_least("images_per_class", images_per_class, 2)
        check_at_least("seed", seed, 0)
        if steps_per_epoch is None:
            steps_per_epoch = max(1, len(self.images) // batch_size)
        check_at_least("steps_per_epoch", steps_per_epoch, 1)
        if augment is not None and not callable(augment):
            raise ValueError(f"`augment` must be None or a callable. Received: {augment!r}")
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.classes_per_batch = int(classes_per_batch)
        self.images_per_class = int(images_per_class)
        self.seed = int(seed)
        self.augment = augment
        self.epoch = 0
        self._epoch_started = False
        num_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        self._table, self._counts = class_table(self.labels, max(num_classes, 1))
        self._sampler = None  # built on first use: pair mining `random` never draws P x K

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

    def _draw_pk(self, index):
        """`classes_per_batch` distinct classes with at least 2 images, `images_per_class` images of each (without
        repetition while the class has enough), as dataset indices [classes_per_batch * images_per_class]: batch
        `epoch * steps_per_epoch + index` of the one P x K sampler."""
        if self._sampler is None:
            self._sampler = PKSampler(self.labels, len(self._counts), self.classes_per_batch, self.images_per_class,
                                      self.seed, min_images=2)
        return self._sampler.indices(self.epoch * self.steps_per_epoch + int(index))

    def _check_pclasses_per_batch(self):
        eligible = int((self._counts >= 2).sum())
        if eligible < self.classes_per_batch:
            raise ValueError(f"`classes_per_batch` ({self.classes_per_batch}) exceeds the number of classes with at "
                             f"least 2 images ({eligible})")

    def _embed(self, indices):
        """Embeddings of `images[indices]` with the current weights, in one batched call."""
        return self.embedding_model(self.images[indices], training=False)

    def _output(self, indices):
        images = self.images[indices]
        return images if self.augment is None else self.augment(images)
