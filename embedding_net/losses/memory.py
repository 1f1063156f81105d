"""Cross-batch memory (XBM, Wang et al. 2020): the embeddings and labels of the last batches as
extra references of a pair-based loss.

Embeddings drift slowly once training settles, so those of earlier batches are nearly what the
network would compute now; a queue of the last `size` of them gives each anchor many more pairs
than its batch holds. The pair-based losses on cosine similarities pay a B x (B + size) matrix;
the triplet and batch contrastive losses mine the (B + size) x (B + size) matrix with the
memory's rows weighted 0 as anchors (their mining rules work on square matrices).

Anchors are the batch's; references are the batch itself followed by the memory (no gradient
flows into the memory). pytorch-metric-learning's `CrossBatchMemory` differs: it enqueues first
and takes the memory alone, current batch included, as references. The memory joins once it is
full and `warmup_steps` steps have run; before, the loss is the plain in-batch loss.

The queue is a layer of non-trainable variables inside the training model (`MemoryModel`), so
checkpoints and `BackupAndRestore` keep it and a resumed run continues with the same memory.
Under a `tf.distribute` strategy every replica enqueues the global batch (all replicas hold the
same memory); the anchors are the replica's batch, or the global batch with `cross_replica`.
"""

import keras
from keras import ops

from embedding_net.losses.reduction import gather_across_replicas, scale_for_replicas
from embedding_net.losses.registry import get_loss, list_losses, loss_info


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
            # Every replica writes the same global batch: the first replica's write is kept.
            return self.add_weight(name=name, shape=shape, dtype=dtype, initializer="zeros", trainable=False,
                                   aggregation="only_first_replica")

        self.embeddings = variable("embeddings", (self.size, embeddings_shape[-1]), "float32")
        self.labels = variable("labels", (self.size,), "int32")
        self.enqueued = variable("enqueued", (), "int64")  # embeddings enqueued since the start
        self.steps = variable("steps", (), "int64")

    def ready(self):
        """Whether the memory is full and past its warm-up."""
        return ops.logical_and(ops.greater_equal(self.enqueued, self.size),
                               ops.greater_equal(self.steps, self.warmup_steps))

    def references(self):
        """(labels, embeddings) to use as references now: all of the memory once it is
        `ready`, none of it before (a slice of 0 rows leaves the plain in-batch loss)."""
        rows = ops.where(self.ready(), self.size, 0)
        return self.labels[:rows], self.embeddings[:rows]

    def enqueue(self, labels, embeddings):
        """Writes the batch over the oldest entries and counts a step; of a batch larger than the
        memory only the last `size` rows are kept (duplicate positions would race)."""
        batch = ops.cast(ops.shape(ops.reshape(labels, (-1,)))[0], "int64")
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")[-self.size:]
        embeddings = embeddings[-self.size:]
        kept = ops.cast(ops.shape(labels)[0], "int64")
        positions = ops.cast(ops.mod(self.enqueued + (batch - kept) + ops.arange(kept, dtype="int64"), self.size),
                             "int32")
        self.embeddings.assign(ops.scatter_update(self.embeddings, positions[:, None],
                                                  ops.stop_gradient(ops.cast(embeddings, "float32"))))
        self.labels.assign(ops.scatter_update(self.labels, positions[:, None], labels))
        self.enqueued.assign_add(batch)
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
        memory, loss = self.memory, self.memory_loss
        # Every replica enqueues the global batch, so that all replicas hold the same memory;
        # the anchors are the global batch too with `cross_replica`, else the replica's own.
        every_label, every_embedding, _ = gather_across_replicas(y, y_pred)
        labels, embeddings = (every_label, every_embedding) if loss.cross_replica else (y, y_pred)
        value = scale_for_replicas(loss.references_loss(labels, embeddings, *memory.references()))
        memory.enqueue(every_label, every_embedding)  # after the read above: control dependencies keep the order
        for extra in self.losses:  # regularisers, scaled per replica as Keras' own compute_loss does
            value = value + ops.cast(self._aggregate_additional_loss(extra), value.dtype)
        return value


def loss_takes_memory(loss):
    """Whether `loss` (an instance) can take cross-batch memory references."""
    return callable(getattr(loss, "references_loss", None))


def losses_with_memory():
    """The registered embedding losses that take a cross-batch memory."""
    return [name for name in list_losses("embedding")
            if "head" not in loss_info(name) and callable(getattr(get_loss(name), "references_loss", None))]
