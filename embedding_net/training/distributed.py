"""Training on several devices or machines with `tf.distribute`.

- `build_strategy("none" | "mirrored" | "multi_worker")`: one device; every GPU of one machine
  (`MirroredStrategy`); several machines (`MultiWorkerMirroredStrategy`, cluster read from the
  `TF_CONFIG` environment variable). Build it first thing in the program: multi-worker collectives
  must be configured before TensorFlow runs any op.
- The global batch stays P x K. TensorFlow splits a distributed batch along axis 0 into
  contiguous, equal chunks, one per replica; `pk_dataset` puts the K images of a class next to
  each other, so with P divisible by the number of replicas every replica gets whole classes
  (`check_classes_per_replica`).
- Cross-replica mining: `TripletLoss(cross_replica=True)` and
  `BatchContrastiveLoss(cross_replica=True)` call `gather_across_replicas`, so a global batch
  mines as on one device. Both scale their value with `scale_for_replicas`, Keras'
  convention: the gradients summed over replicas are the gradient of the mean replica loss,
  which is the one-device gradient when the loss was computed on the gathered batch.
- `model.fit` works under `MirroredStrategy`, not under `MultiWorkerMirroredStrategy` (an open
  Keras 3 bug, keras-team/keras#20585): `fit_distributed` is a small training loop on
  `strategy.run` that takes the same callbacks and writes the same logs.

Model, optimizer and `compile` must all happen inside `strategy.scope()`::

    strategy = build_strategy("multi_worker")         # before anything else touches TensorFlow
    check_classes_per_replica(classes_per_batch, strategy.num_replicas_in_sync)
    with strategy.scope():
        model = build_embedding_model(...)
        model.compile(optimizer=..., loss=TripletLoss(cross_replica=True), metrics=...)
    history = fit_distributed(model, dataset, epochs, steps_per_epoch, strategy, callbacks)

Files: only the chief's outputs count. Give every other worker its own folder
(`worker_dir(run_dir, strategy)`) for its checkpoints, logs and backups, as the TensorFlow
multi-worker guide advises: every worker runs the same saving code (which may involve
collectives) and nothing collides on a shared file system.
"""

import keras
import numpy as np
import tensorflow as tf

from embedding_net.training.strategy import distribute_dataset, task_of


def _build_for_training(model, dataset, strategy):
    """Creates every variable (model, compiled loss and metrics, optimizer) in the scope, as
    `model.fit` does before its first step: none may be created inside `strategy.run`."""
    with strategy.scope():
        # Symbolic shapes only: no batch is drawn. The private hook is `model.fit`'s own.
        model._symbolic_build(data_batch=dataset.element_spec)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)


def _step_function(strategy, step):
    """`iterator -> logs` (Python floats): one `step` on every replica, the logs averaged over
    replicas as `model.fit` reports them, in one collective."""
    names = []  # filled when the step is traced

    def replica_step(batch):
        logs = step(batch)
        names[:] = sorted(logs)
        return tf.stack([tf.cast(logs[name], tf.float32) for name in names])

    def run(iterator):
        return strategy.reduce("MEAN", strategy.run(replica_step, args=(next(iterator),)), axis=None)

    run = tf.function(run, autograph=False)

    def logs(iterator):
        values = run(iterator).numpy()
        return {name: float(value) for name, value in zip(names, values)}

    return logs


def _state_averager(model, strategy):
    """A function that replaces every float non-trainable weight (batch normalisation's moving
    statistics) by its mean over replicas; a no-op on one replica.

    Keras updates them with aggregation "none": each replica keeps the statistics of its own
    share of the batches, and `model.fit` saves replica 0's. Averaged at every epoch end, all
    workers hold (and checkpoint, and resume from) the same model, with statistics of all data.
    """
    states = [v for v in model.non_trainable_weights if "float" in str(v.dtype)]
    if strategy.num_replicas_in_sync == 1 or not states:
        return lambda: None

    def average():
        means = tf.distribute.get_replica_context().all_reduce(
            "MEAN", [tf.identity(v.value) for v in states])  # local values, not the variables
        for variable, mean in zip(states, means):
            variable.assign(mean)

    return tf.function(lambda: strategy.run(average), autograph=False)


def _agreed_initial_epoch(strategy, epoch):
    """The epoch every worker restored; a ValueError (rather than a hang) if they differ."""
    if task_of(strategy)[0] is None:  # one machine: one backup
        return epoch

    def per_replica():
        return tf.constant([1.0, epoch, epoch * epoch], tf.float64)

    # Sums of 1, e and e^2 over replicas: every worker sees the same sums, hence the same
    # verdict (equal epochs iff their variance n S2 - S1^2 is 0).
    count, first, second = strategy.reduce(
        "SUM", tf.function(lambda: strategy.run(per_replica), autograph=False)(), axis=None).numpy()
    if count * second != first * first:
        raise ValueError(f"the workers restored different epochs from their backups (this one: {epoch}, "
                         f"mean: {first / count:g}); delete every worker's backup folder to start over")
    return epoch


def fit_distributed(model, dataset, epochs, steps_per_epoch, strategy, callbacks=None,
                    validation_data=None, validation_steps=None, initial_epoch=0, verbose=1):
    """`model.fit` for any `tf.distribute` strategy, multi-worker included.

    One step is `model.train_step` run with `strategy.run` inside a `tf.function`, over
    `distribute_dataset(dataset, strategy)`: the same loss, metrics and optimizer update as
    `model.fit`, and the same callback calls (train/epoch/batch begin and end, validation with
    `val_` logs, `model.stop_training`, the `BackupAndRestore` resume epoch). Epoch logs hold
    the compiled metrics (scalars), `loss` and `learning_rate`. One iterator runs through all epochs, so
    step i of the run sees batch i of `dataset`, as with `model.fit(steps_per_epoch=...)`.
    One difference: at every epoch end, batch normalisation's moving statistics are averaged
    over replicas (`model.fit` keeps replica 0's), so every worker holds the same model.

    Args:
        model: a Keras model created and compiled inside `strategy.scope()` (its variables, the
            optimizer's and the metrics' must all be distributed variables).
        dataset: an endless `tf.data.Dataset` of global batches `(x, y)` (e.g. `pk_dataset`),
            the same on every worker.
        epochs, steps_per_epoch: as for `model.fit`.
        strategy: the strategy the model was built under.
        callbacks: Keras callbacks; on workers other than the chief, point their files into
            `worker_dir(...)`.
        validation_data, validation_steps: a dataset of global batches and the number of its
            first batches evaluated after each epoch (both or neither).
        initial_epoch: the epoch to start from (a `BackupAndRestore` callback overrides it).
        verbose: 0 silent, 1 progress bar, 2 one line per epoch.

    Returns:
        The `keras.callbacks.History` of the run.
    """
    if (validation_data is None) != (validation_steps is None):
        raise ValueError("give both `validation_data` and `validation_steps`, or neither. Received: "
                         f"validation_steps={validation_steps!r}")
    _build_for_training(model, dataset, strategy)
    train_step = _step_function(strategy, model.train_step)
    average_states = _state_averager(model, strategy)
    iterator = iter(distribute_dataset(dataset, strategy))
    test_step = validation = None
    if validation_data is not None:
        test_step = _step_function(strategy, model.test_step)
        validation = distribute_dataset(validation_data, strategy)

    callbacks = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, verbose=verbose, epochs=epochs,
        steps=steps_per_epoch, model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    # BackupAndRestore tells the epoch it restored through this attribute, as in `model.fit`.
    initial_epoch = _agreed_initial_epoch(strategy, getattr(model, "_initial_epoch", None) or initial_epoch)
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            logs = train_step(iterator)
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)  # the metrics' running means: the epoch's values
        average_states()
        if validation_data is not None:
            model.reset_metrics()
            callbacks.on_test_begin()
            val_logs = {}
            validation_iterator = iter(validation)  # the same batches every epoch, as `model.fit`
            for step in range(validation_steps):
                callbacks.on_test_batch_begin(step)
                val_logs = test_step(validation_iterator)
                callbacks.on_test_batch_end(step, val_logs)
            callbacks.on_test_end(val_logs)
            epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        epoch_logs["learning_rate"] = float(np.asarray(model.optimizer.learning_rate))
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callbacks.on_train_end(logs=epoch_logs)
    model._initial_epoch = None  # consumed: a later run starts from its own backup state
    return model.history
