"""Runs one distributed scenario in a fresh process and prints its results as JSON.

Logical devices and multi-worker collectives must be configured before TensorFlow initialises,
so `tests/test_distributed.py` starts this script once per scenario:

    python tests/distributed_driver.py mirrored OUT_DIR       (two logical CPU devices)
    python tests/distributed_driver.py multi_worker OUT_DIR   (TF_CONFIG set by the caller)
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

LOSSES = {  # name -> (class name, keyword arguments)
    "triplet_all": ("TripletLoss", {"mining": "all", "margin": 0.5}),
    "triplet_hard": ("TripletLoss", {"mining": "hard", "margin": 0.5}),
    "triplet_semi_hard": ("TripletLoss", {"mining": "semi_hard", "margin": 0.5}),
    "contrastive": ("BatchContrastiveLoss", {"positive_margin": 0.1, "negative_margin": 1.5}),
    "multi_similarity": ("MultiSimilarityLoss", {}),
    "multi_similarity_mined": ("MultiSimilarityLoss", {"mining_epsilon": 0.1}),
    "supcon": ("SupConLoss", {}),
    "circle": ("CircleLoss", {}),
    "proxy_anchor": (None, {}),  # `ProxyAnchorOnFixedCentres`
}
FITTED = ("triplet_semi_hard", "contrastive", "supcon")  # one model.fit step each: one per loss family
P, K, FEATURES, EMBEDDING = 4, 4, 8, 4


def two_cpu_devices():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    return ["/cpu:0", "/cpu:1"]


def dense_model(weights=None):
    import keras

    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(EMBEDDING)])
    if weights is not None:
        model.set_weights(weights)
    return model


def make_loss(name, cross_replica):
    from embedding_net import losses

    if name == "proxy_anchor":
        return ProxyAnchorOnFixedCentres(cross_replica)
    class_name, kwargs = LOSSES[name]
    return getattr(losses, class_name)(cross_replica=cross_replica, **kwargs)


class ProxyAnchorOnFixedCentres:
    """Proxy Anchor as a function of the embeddings alone: its loss on the cosines to 10 fixed
    class centres (the same seeded centres in every instance)."""

    def __init__(self, cross_replica):
        from embedding_net.losses import ClassCentres, ProxyAnchorLoss

        self.centres = ClassCentres(10)
        self.centres.build((None, EMBEDDING))
        self.centres.centers.assign(np.random.default_rng(5).normal(size=(EMBEDDING, 10)).astype("float32"))
        self.loss = ProxyAnchorLoss(cross_replica=cross_replica)

    def __call__(self, labels, embeddings):
        return self.loss(labels, self.centres(embeddings))


def relative_error(values, references):
    """The largest difference between matching arrays, relative to the largest reference entry
    of all (the last bias's gradient is 0 up to rounding: triplet losses ignore translations)."""
    scale = max(float(np.max(np.abs(r))) for r in references)
    return max(float(np.max(np.abs(np.asarray(v) - r))) for v, r in zip(values, references)) / scale


def mirrored_equality(strategy):
    """One global batch on one device and on two replicas, for every loss: the loss and the
    gradients summed over replicas, with and without cross_replica; and the weight update of
    one `model.fit` SGD step with cross_replica (for the losses of `FITTED`)."""
    import keras
    import tensorflow as tf

    from embedding_net.training.strategy import distribute_dataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(P * K, FEATURES)).astype("float32")
    y = np.repeat(rng.permutation(10)[:P], K).astype("int32")  # K consecutive images per class
    keras.utils.set_random_seed(0)
    initial = dense_model().get_weights()
    learning_rate = 0.5
    results = {"replicas": strategy.num_replicas_in_sync}
    model = dense_model(initial)
    for name in LOSSES:
        with tf.GradientTape() as tape:
            loss = make_loss(name, False)(y, model(x))
        gradients = tape.gradient(loss, model.trainable_variables)
        results[name] = {"one_device": float(loss), "gradients": [g.numpy() for g in gradients]}

    with strategy.scope():
        replicated = dense_model(initial)
    combinations = [(name, cross_replica) for name in LOSSES for cross_replica in (True, False)]
    loss_functions = [make_loss(name, cross_replica) for name, cross_replica in combinations]

    def step(batch):
        features, labels = batch
        outputs = []
        for loss_fn in loss_functions:
            with tf.GradientTape() as tape:
                value = loss_fn(labels, replicated(features))
            outputs.append((value, tape.gradient(value, replicated.trainable_variables)))
        return outputs

    batch = next(iter(distribute_dataset(tf.data.Dataset.from_tensors((x, y)), strategy)))
    outputs = tf.function(lambda b: strategy.run(step, args=(b,)))(batch)
    for (name, cross_replica), (values, grads) in zip(combinations, outputs):
        summed = [strategy.reduce("SUM", g, axis=None).numpy() for g in grads]
        results[name]["cross_replica" if cross_replica else "per_replica"] = {
            "loss": float(strategy.reduce("SUM", values, axis=None)),
            "gradient_error": relative_error(summed, results[name]["gradients"]),
        }

    for name in FITTED:
        with strategy.scope():
            fitted = dense_model(initial)
            fitted.compile(optimizer=keras.optimizers.SGD(learning_rate), loss=make_loss(name, True))
        history = fitted.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), epochs=1, steps_per_epoch=1, verbose=0)
        update = [-learning_rate * g for g in results[name]["gradients"]]
        results[name]["cross_replica"]["fit_loss"] = history.history["loss"][0]
        results[name]["cross_replica"]["fit_update_error"] = relative_error(
            [after - before for after, before in zip(fitted.get_weights(), initial)], update)
    for name in LOSSES:
        del results[name]["gradients"]
    return results


def image_data(classes=12, per_class=4, size=16, seed=0):
    """Random uint8 images [N, size, size, 1], `per_class` of each class, and their labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (classes * per_class, size, size, 1), dtype=np.uint8)
    return images, np.repeat(np.arange(classes), per_class).astype("int32")


def conv_model():
    from embedding_net.models.builders import build_embedding_model

    return build_embedding_model("conv4", (16, 16, 1), embedding_size=8)


def small_image_model():
    """uint8 images -> rescaling -> flatten -> dense: cheap to trace."""
    import keras

    return keras.Sequential([keras.Input((16, 16, 1), dtype="uint8"), keras.layers.Rescaling(1 / 255),
                             keras.layers.Flatten(), keras.layers.Dense(8)])


def compile_model(model, metrics=True):
    import keras

    from embedding_net.losses.triplet import TripletLoss
    from embedding_net.mining.monitors import collapse_monitors

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=TripletLoss(cross_replica=True),
                  metrics=collapse_monitors() if metrics else None)
    return model


class _Interrupt(Exception):
    pass


def mirrored_fit(strategy, out_dir):
    """`model.fit` over `pk_dataset` on two replicas, with validation; `fit_distributed` from the
    same weights (same history and weights expected); and `fit_distributed` interrupted after one epoch and
    resumed by `BackupAndRestore` (the weights of the uninterrupted run expected). A small
    model, to keep the test short; `multi_worker` trains the real one."""
    import keras

    from embedding_net.training.callbacks import LearningRateLogger
    from embedding_net.training.strategy import check_classes_per_replica
    from embedding_net.training.distributed import fit_distributed
    from embedding_net.data.sampling import pk_dataset

    classes_per_batch, images_per_class, steps, epochs = 4, 4, 2, 2
    check_classes_per_replica(classes_per_batch, strategy.num_replicas_in_sync)
    images, labels = image_data()

    def dataset(start_batch=0):
        return pk_dataset(labels, 12, classes_per_batch, images_per_class, images=images, seed=3,
                          start_batch=start_batch)

    keras.utils.set_random_seed(0)
    with strategy.scope():
        initial = small_image_model().get_weights()

    def fresh():
        with strategy.scope():
            model = small_image_model()
            model.set_weights(initial)
            return compile_model(model)

    def callbacks(name):
        return [LearningRateLogger(), keras.callbacks.CSVLogger(os.path.join(out_dir, f"{name}.csv"))]

    def validation():
        return pk_dataset(labels, 12, classes_per_batch, images_per_class, images=images, seed=4)

    fitted = fresh()
    fit_history = fitted.fit(dataset(), epochs=epochs, steps_per_epoch=steps, callbacks=callbacks("fit"),
                             validation_data=validation(), validation_steps=1, verbose=0).history
    looped = fresh()
    loop_history = fit_distributed(looped, dataset(), epochs, steps, strategy, callbacks("loop"),
                                   validation_data=validation(), validation_steps=1, verbose=0).history

    class InterruptAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise _Interrupt

    backup = os.path.join(out_dir, "backup")
    try:
        fit_distributed(fresh(), dataset(), epochs, steps, strategy,
                        [InterruptAt(), keras.callbacks.BackupAndRestore(backup)], verbose=0)
    except _Interrupt:
        pass
    resumed = fresh()  # a new process would start from fresh weights too
    resumed_history = fit_distributed(resumed, dataset(start_batch=steps), epochs, steps, strategy,
                                      [keras.callbacks.BackupAndRestore(backup)], verbose=0).history

    def difference(first, second):
        return max(float(np.max(np.abs(a - b))) for a, b in zip(first.get_weights(), second.get_weights()))

    return {
        "fit": fit_history, "loop": loop_history, "resumed": resumed_history,
        "trained": difference(fitted, fresh()),
        "loop_vs_fit": difference(looped, fitted),
        "resumed_vs_loop": difference(resumed, looped),
        "backup_left": os.path.exists(backup),
    }


def multi_worker(out_dir):
    """One worker of a `MultiWorkerMirroredStrategy` cluster (TF_CONFIG set by the caller):
    `fit_distributed` with the training callbacks, the model saved by the chief, this worker's
    final weights written to `out_dir/weights_<index>.npz`."""
    import shutil

    from embedding_net.training.strategy import build_strategy, is_chief, worker_dir

    strategy = build_strategy("multi_worker")  # first: before TensorFlow runs anything
    import keras

    from embedding_net.training.callbacks import AtomicCheckpoint, LearningRateLogger, save_model_atomically
    from embedding_net.training.strategy import check_classes_per_replica
    from embedding_net.training.distributed import fit_distributed
    from embedding_net.losses.triplet import TripletLoss
    from embedding_net.data.sampling import pk_dataset

    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    classes_per_batch, images_per_class, steps, epochs = 4, 2, 2, 2
    check_classes_per_replica(classes_per_batch, strategy.num_replicas_in_sync)
    images, labels = image_data()
    dataset = pk_dataset(labels, 12, classes_per_batch, images_per_class, images=images, seed=5)
    keras.utils.set_random_seed(task)  # different seeds: the chief's initial weights must win
    with strategy.scope():
        model = compile_model(conv_model())
    # The first step's loss on one device: each worker's batch normalisation normalises its own
    # half of the global batch (in training mode), then the loss mines the whole batch. On a
    # copy, since training mode updates the moving statistics.
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    first_images, first_labels = next(iter(dataset))
    half = classes_per_batch * images_per_class // 2
    embeddings = keras.ops.concatenate([copy(first_images[:half], training=True),
                                        copy(first_images[half:], training=True)])
    reference = float(TripletLoss()(first_labels, embeddings))

    class FirstBatch(keras.callbacks.Callback):
        loss = None

        def on_train_batch_end(self, batch, logs=None):
            if FirstBatch.loss is None:
                FirstBatch.loss = logs["loss"]

    run_dir = worker_dir(out_dir, strategy)
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    callbacks = [
        FirstBatch(), LearningRateLogger(),
        AtomicCheckpoint(os.path.join(run_dir, "checkpoints", "last.keras"),
                         os.path.join(run_dir, "checkpoints", "best.keras"), monitor="loss"),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv")),
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"), double_checkpoint=True),
    ]
    history = fit_distributed(model, dataset, epochs, steps, strategy, callbacks, verbose=0).history
    save_model_atomically(model, os.path.join(run_dir, "model.keras"))
    np.savez(os.path.join(out_dir, f"weights_{task}.npz"), *model.get_weights())
    if not is_chief(strategy):
        shutil.rmtree(run_dir)  # its files were written only to run the same code as the chief
    return {"task": task, "chief": is_chief(strategy), "replicas": strategy.num_replicas_in_sync,
            "history": history, "first_batch_loss": FirstBatch.loss, "reference_loss": reference}


def mirrored_memory(strategy):
    """A supcon model with cross-batch memory (and cross_replica) trained 4 SGD steps on one
    device and on the replicas, on the same global batches: the losses, the weights and the
    memory of every replica against the one-device run's."""
    import contextlib

    import keras
    import tensorflow as tf

    from embedding_net.losses import CrossBatchMemory, MemoryModel, SupConLoss

    rng = np.random.default_rng(1)
    images = rng.normal(size=(4, P * K, FEATURES)).astype("float32")
    labels = np.stack([np.repeat(rng.permutation(10)[:P], K) for _ in range(4)]).astype("int32")
    keras.utils.set_random_seed(0)
    initial = dense_model().get_weights()

    def train(scope):
        with scope:
            model = MemoryModel(dense_model(initial), CrossBatchMemory(2 * P * K), SupConLoss(cross_replica=True))
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss=model.memory_loss)
        history = model.fit(tf.data.Dataset.from_tensor_slices((images, labels)), epochs=4, steps_per_epoch=1,
                            verbose=0)
        return model, history.history["loss"]

    alone, alone_losses = train(contextlib.nullcontext())
    replicated, replicated_losses = train(strategy.scope())
    memories = [v.numpy() for v in strategy.experimental_local_results(replicated.memory.embeddings.value)]
    return {"losses": replicated_losses, "one_device_losses": alone_losses,
            "weight_error": relative_error(replicated.get_weights()[:4], alone.get_weights()[:4]),
            "memory_errors": [relative_error([m], [alone.memory.embeddings.numpy()]) for m in memories],
            "enqueued": int(replicated.memory.enqueued.numpy()), "replicas": len(memories)}


def mirrored(out_dir):
    """`mirrored_equality`, `mirrored_memory` and `mirrored_fit` on two logical CPU devices, in one process."""
    devices = two_cpu_devices()
    from embedding_net.training.strategy import build_strategy

    strategy = build_strategy("mirrored", devices)
    return {"equality": mirrored_equality(strategy), "memory": mirrored_memory(strategy),
            "fit": mirrored_fit(strategy, out_dir)}


def main():
    mode = sys.argv[1]
    results = {"mirrored": mirrored, "multi_worker": multi_worker}[mode](*sys.argv[2:])
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
