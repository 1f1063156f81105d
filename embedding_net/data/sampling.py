"""P x K batches as a `tf.data` pipeline: P classes per batch, K images of each.

The sampler is stateless: batch number `i` depends only on `(seed, i)`, so a resumed run draws
the same batches as an uninterrupted one, and no per-step Python runs in the pipeline.
"""

import numpy as np
import tensorflow as tf

from embedding_net.data.folders import read_image


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


def pk_index_dataset(labels, num_classes, classes_per_batch, images_per_class, seed=0, start_batch=0):
    """An endless dataset of index batches [P * K] into the images described by `labels`.

    Each batch takes P distinct classes uniformly at random and K images of each, without
    repetition while a class has at least K images (with repetition only beyond that).
    Classes with no image are never drawn.

    Args:
        labels: integer class id of every image.
        num_classes: C; ids are in [0, C).
        classes_per_batch: P, at most the number of classes that have images.
        images_per_class: K.
        seed: the integer seed of the whole sequence.
        start_batch: the index of the first batch (to resume a sequence).
    """
    table, counts = class_table(labels, num_classes)
    available = int((counts > 0).sum())
    if classes_per_batch > available:
        raise ValueError(
            f"`classes_per_batch` ({classes_per_batch}) exceeds the number of classes with "
            f"images ({available})"
        )
    table = tf.constant(table)
    counts = tf.constant(counts)
    width = table.shape[1]

    def sample(step):
        step_seed = tf.stack([tf.cast(seed, tf.int64), step])
        class_seed, image_seed = tf.unstack(
            tf.random.experimental.stateless_split(step_seed, num=2), axis=0
        )
        class_keys = tf.random.stateless_uniform([table.shape[0]], class_seed)
        class_keys = tf.where(counts > 0, class_keys, -1.0)
        classes = tf.math.top_k(class_keys, classes_per_batch).indices
        class_counts = tf.gather(counts, classes)
        # A random permutation of each class's slots: sorting random keys, with padding slots
        # keyed last, puts the class's own images first.
        image_keys = tf.random.stateless_uniform([classes_per_batch, width], image_seed)
        padding = tf.range(width)[None, :] >= class_counts[:, None]
        order = tf.argsort(tf.where(padding, 2.0, image_keys), axis=1)
        positions = tf.range(images_per_class)[None, :] % class_counts[:, None]
        slots = tf.gather(order, positions, batch_dims=1)
        return tf.reshape(tf.gather(tf.gather(table, classes), slots, batch_dims=1), [-1])

    return tf.data.Dataset.counter(start=start_batch).map(sample)


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
