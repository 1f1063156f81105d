"""P x K batches as a `tf.data` pipeline: P classes per batch, K images of each.

The sampler is stateless: batch number `i` depends only on `(seed, i)`, so a resumed run draws
the same batches as an uninterrupted one, and no per-step Python runs in the pipeline.
"""

import numpy as np
import tensorflow as tf

from embedding_net.data.images import read_image


def class_table(labels, num_classes):
    """Pads the image indices of each class into a [C, max_count] table, with their counts."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    table = np.zeros((num_classes, max(1, counts.max())), np.int32)
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for c in range(num_classes):
        table[c, : counts[c]] = order[starts[c] : starts[c] + counts[c]]
    return table, counts.astype(np.int32)


class PKSampler:
    """The one P x K sampler: batch number `step` holds P distinct classes drawn uniformly among
    the classes with at least `min_images` images, and K images of each, without repetition
    while a class has at least K images (with repetition only beyond that).

    Stateless: batch `step` depends only on `(seed, step)`, so a resumed run draws the same
    batches as an uninterrupted one. `dataset()` runs the draw inside a `tf.data` pipeline (no
    per-step Python); `indices(step)` runs it eagerly, for the mining generators, which draw the
    batch they are asked for by number.

    Args:
        labels: integer class id of every image.
        num_classes: C; ids are in [0, C).
        classes_per_batch: P, at most the number of classes with at least `min_images` images.
        images_per_class: K.
        seed: the integer seed of the whole sequence.
        min_images: classes with fewer images are never drawn (1: every class with an image;
            2: classes that can give a positive pair).
    """

    def __init__(self, labels, num_classes, classes_per_batch, images_per_class, seed=0, min_images=1):
        table, counts = class_table(labels, num_classes)
        available = int((counts >= min_images).sum())
        if classes_per_batch > available:
            described = "images" if min_images == 1 else f"at least {min_images} images"
            raise ValueError(f"`classes_per_batch` ({classes_per_batch}) exceeds the number of classes "
                             f"with {described} ({available})")
        self.classes_per_batch = int(classes_per_batch)
        self.images_per_class = int(images_per_class)
        self.seed = int(seed)
        self.min_images = int(min_images)
        self._table = tf.constant(table)
        self._counts = tf.constant(counts)
        self._eager_draw = tf.function(self._draw, autograph=False)

    def _draw(self, step):
        table, counts = self._table, self._counts
        step_seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64)])
        class_seed, image_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, num=2), axis=0)
        class_keys = tf.random.stateless_uniform([table.shape[0]], class_seed)
        class_keys = tf.where(counts >= self.min_images, class_keys, -1.0)
        classes = tf.math.top_k(class_keys, self.classes_per_batch).indices
        class_counts = tf.gather(counts, classes)
        # A random permutation of each class's slots: sorting random keys, with padding slots
        # keyed last, puts the class's own images first.
        image_keys = tf.random.stateless_uniform([self.classes_per_batch, table.shape[1]], image_seed)
        padding = tf.range(table.shape[1])[None, :] >= class_counts[:, None]
        order = tf.argsort(tf.where(padding, 2.0, image_keys), axis=1)
        positions = tf.range(self.images_per_class)[None, :] % class_counts[:, None]
        slots = tf.gather(order, positions, batch_dims=1)
        return tf.reshape(tf.gather(tf.gather(table, classes), slots, batch_dims=1), [-1])

    def indices(self, step):
        """The image indices [P * K] of batch `step`, as a NumPy array."""
        return self._eager_draw(tf.constant(int(step), tf.int64)).numpy()

    def dataset(self, start_batch=0):
        """An endless `tf.data` dataset of index batches [P * K], from batch `start_batch` on."""
        return tf.data.Dataset.counter(start=start_batch).map(self._draw)


def pk_index_dataset(labels, num_classes, classes_per_batch, images_per_class, seed=0, start_batch=0):
    """An endless dataset of index batches [P * K] into the images described by `labels`: the
    batches of `PKSampler(labels, num_classes, classes_per_batch, images_per_class, seed)` from
    batch `start_batch` on (see there)."""
    return PKSampler(labels, num_classes, classes_per_batch, images_per_class, seed).dataset(start_batch)


def pk_dataset(
    labels,
    num_classes,
    classes_per_batch,
    images_per_class,
    images=None,
    paths=None,
    image_size=None,
    channels=1,
    seed=0,
    start_batch=0,
):
    """An endless dataset of `(images uint8 [P*K, H, W, C], labels int32 [P*K])` batches.

    Give either `images` (decoded in memory: batches are gathers, the fastest path) or `paths`
    (decoded and resized in parallel for every batch, for datasets too big for memory).
    """
    if (images is None) == (paths is None):
        raise ValueError("give exactly one of `images` and `paths`")
    labels = np.asarray(labels, np.int32)
    indices = pk_index_dataset(labels, num_classes, classes_per_batch, images_per_class, seed, start_batch)
    label_tensor = tf.constant(labels)
    if images is not None:
        image_tensor = tf.constant(images)
        dataset = indices.map(
            lambda idx: (tf.gather(image_tensor, idx), tf.gather(label_tensor, idx)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        height, width = image_size
        path_tensor = tf.constant([str(p) for p in paths])

        def decode(path):
            return read_image(path.decode("utf-8"), (height, width), channels)

        def load(index):
            image = tf.numpy_function(decode, [tf.gather(path_tensor, index)], tf.uint8)
            image.set_shape([height, width, channels])
            return image, tf.gather(label_tensor, index)

        dataset = indices.unbatch().map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(
            classes_per_batch * images_per_class, drop_remainder=True
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
