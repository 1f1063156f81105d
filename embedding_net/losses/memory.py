"""Cross-batch memory (XBM, Wang et al. 2020): the embeddings and labels of the last batches as
extra references of a pair-based loss.

Embeddings drift slowly once training settles, so those of earlier batches are nearly what the
network would compute now; a queue of the last `size` of them gives each anchor many more pairs
than its batch holds, for the price of a B x (B + size) matrix.

Anchors are the batch's; references are the batch itself followed by the memory (no gradient
flows into the memory). pytorch-metric-learning's `CrossBatchMemory` differs: it enqueues first
and takes the memory alone, current batch included, as references. The memory joins once it is
full and `warmup_steps` steps have run; before, the loss is the plain in-batch loss.

The queue is a layer of non-trainable variables inside the training model (`MemoryModel`), so
checkpoints and `BackupAndRestore` keep it and a resumed run continues with the same memory.
"""

import keras
from keras import ops

from embedding_net.losses.registry import loss_info


def check_memory_size(key, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{key}` must be an integer >= 1. Received: {value!r}")


@keras.saving.register_keras_serializable(package="embedding_net")
class CrossBatchMemory(keras.layers.Layer):
    """A first-in first-out queue of `size` embeddings [size, D] and their labels.

    Args:
        size: the number of embeddings kept, >= 1 (at least a batch).
        warmup_steps: training steps before the memory is used, >= 0.
    """

    def __init__(self, size, warmup_steps=0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        check_memory_size("size", size)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be an integer >= 0. Received: {warmup_steps!r}")
        self.size, self.warmup_steps = size, warmup_steps

    def build(self, embeddings_shape):
        def variable(name, shape, dtype):
            return self.add_weight(name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False)

        self.embeddings = variable("embeddings", (self.size, embeddings_shape[-1]), "float32")
        self.labels = variable("labels", (self.size,), "int32")
        self.enqueued = variable("enqueued", (), "int64")  # embeddings enqueued since the start
        self.steps = variable("steps", (), "int64")

    def ready(self):
        """Whether the memory is full and past its warm-up."""
        return ops.logical_and(ops.greater_equal(self.enqueued, self.size),
                               ops.greater_equal(self.steps, self.warmup_steps))

    def enqueue(self, labels, embeddings):
        """Writes the batch over the oldest entries and counts a step."""
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        batch = ops.shape(labels)[0]
        positions = ops.cast(ops.mod(self.enqueued + ops.arange(batch, dtype="int64"), self.size), "int32")
        self.embeddings.assign(ops.scatter_update(self.embeddings, positions[:, None],
                                                  ops.stop_gradient(ops.cast(embeddings, "float32"))))
        self.labels.assign(ops.scatter_update(self.labels, positions[:, None], labels))
        self.enqueued.assign_add(ops.cast(batch, "int64"))
        self.steps.assign_add(1)

    def call(self, embeddings):
        return embeddings  # the queue is read and written by `MemoryModel.compute_loss`

    def get_config(self):
        config = super().get_config()
        config.update({"size": self.size, "warmup_steps": self.warmup_steps})
        return config


class MemoryModel(keras.Model):
    """The training model of a pair-based loss with cross-batch memory: the embedding tower,
    and a `CrossBatchMemory` that the training loss reads and then fills. Validation and
    prediction are the tower's alone. Keep and save the tower, not this model.

    Args:
        tower: the embedding model.
        memory: a `CrossBatchMemory`.
        loss: the pair-based loss; it must have `references_loss` (see `loss_takes_memory`).
    """

    def __init__(self, tower, memory, loss, **kwargs):
        super().__init__(**kwargs)
        if not loss_takes_memory(loss):
            raise ValueError(f"{type(loss).__name__} cannot take a cross-batch memory")
        self.tower, self.memory, self.memory_loss = tower, memory, loss
        self.memory.build(tower.output_shape)
        self.built = True  # both parts are built: `fit`'s BackupAndRestore needs a built model

    def build(self, input_shape=None):
        self.built = True

    def call(self, images, training=None):
        return self.tower(images, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not training:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        if sample_weight is not None:
            raise ValueError("cross-batch memory takes no sample weights")
        memory = self.memory
        value = ops.cond(
            memory.ready(),
            lambda: self.memory_loss.references_loss(y, y_pred, memory.labels, memory.embeddings),
            lambda: self.memory_loss(y, y_pred))
        memory.enqueue(y, y_pred)  # after the read above: automatic control dependencies keep the order
        for extra in self.losses:  # regularisers, as Keras' own compute_loss adds them
            value = value + ops.cast(extra, value.dtype)
        return value


def loss_takes_memory(loss):
    """Whether `loss` (an instance) can take cross-batch memory references."""
    return callable(getattr(loss, "references_loss", None))


def losses_with_memory():
    """The registered embedding losses that take a cross-batch memory."""
    from embedding_net.losses.registry import get_loss, list_losses

    return [name for name in list_losses("embedding")
            if "head" not in loss_info(name) and callable(getattr(get_loss(name), "references_loss", None))]
