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

import json
import os

import keras
import numpy as np
import tensorflow as tf

STRATEGIES = ("none", "mirrored", "multi_worker")

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\''
)


def read_tf_config(raw=None):
    """The cluster and task of the `TF_CONFIG` JSON (default: the environment variable),
    validated: a ValueError echoing what was received when it is missing or malformed.

    Returns:
        `(cluster, task)`: `{"chief": [...], "worker": ["host:port", ...]}` and
        `{"type": "worker", "index": 0}`.
    """
    raw = os.environ.get("TF_CONFIG") if raw is None else raw
    if not raw:
        raise ValueError("train.distribute multi_worker reads the cluster from the TF_CONFIG "
                         f"environment variable, which is not set. Set it on every machine, e.g. {_TF_CONFIG_EXAMPLE} "
                         "(the same cluster everywhere, each machine its own task index)")
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    cluster = parsed.get("cluster") if isinstance(parsed, dict) else None
    task = parsed.get("task") if isinstance(parsed, dict) else None
    problem = None
    if not isinstance(cluster, dict) or not cluster:
        problem = 'a "cluster" object of jobs'
    elif set(cluster) - {"chief", "worker"}:
        problem = f'cluster jobs among "chief" and "worker" only, found {sorted(cluster)}'
    elif "worker" not in cluster and "chief" not in cluster:
        problem = 'a "worker" job'
    elif not all(isinstance(hosts, list) and hosts and all(isinstance(h, str) and ":" in h for h in hosts)
                 for hosts in cluster.values()):
        problem = 'every job a non-empty list of "host:port" strings'
    elif not isinstance(task, dict) or task.get("type") not in cluster:
        problem = f'a "task" whose "type" is one of the cluster jobs {sorted(cluster)}'
    elif (not isinstance(task.get("index"), int) or isinstance(task.get("index"), bool)
          or not 0 <= task["index"] < len(cluster[task["type"]])):
        problem = f'a "task" "index" in [0, {len(cluster[task["type"]])}) for job {task["type"]!r}'
    if problem is not None:
        raise ValueError(f"TF_CONFIG must be JSON with {problem}, e.g. {_TF_CONFIG_EXAMPLE}. "
                         f"Received: {raw!r}")
    return cluster, task


def build_strategy(name, devices=None):
    """The `tf.distribute` strategy of `train.distribute`.

    Args:
        name: `none` (the default strategy: one device, `model.fit` as usual), `mirrored` (every
            GPU of this machine, or `devices`) or `multi_worker` (the machines of `TF_CONFIG`,
            each with its GPUs; call this before any other TensorFlow operation).
        devices: for `mirrored`, the devices to use (default: every GPU, else the CPU).

    Returns:
        A `tf.distribute.Strategy`; use it with `strategy.scope()` in every case.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`distribute` must be one of {', '.join(STRATEGIES)}. Received: {name!r}")
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    read_tf_config()
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        if "program startup" not in str(error):
            raise
        raise RuntimeError("build_strategy('multi_worker') must run before any other TensorFlow "
                           f"operation of the program (TensorFlow: {error})") from None


def _task(strategy):
    """`(task_type, task_id, jobs)` of a multi-worker strategy, `(None, None, ())` otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().jobs:
        return None, None, ()
    return resolver.task_type, resolver.task_id, tuple(resolver.cluster_spec().jobs)


def is_chief(strategy):
    """True on the worker whose files count: the `chief` task, else worker 0; always True on
    one machine."""
    task_type, task_id, jobs = _task(strategy)
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in jobs


def worker_dir(directory, strategy):
    """`directory` on the chief; `directory/workertemp_<index>` on every other worker, so that
    all of them run the same saving code without writing over the chief's files. A worker's own
    folder also holds its `BackupAndRestore` state, from which it resumes."""
    if is_chief(strategy):
        return directory
    return os.path.join(directory, f"workertemp_{_task(strategy)[1]}")


def check_classes_per_replica(classes_per_batch, num_replicas):
    """Classes per replica, P / R; a ValueError unless R divides P.

    A distributed batch is cut along axis 0 into R contiguous chunks of P K / R images, and a
    P x K batch holds each class's K images next to each other: R must divide P for every
    chunk to hold whole classes (a class cut in two loses positive pairs on both sides).
    """
    if classes_per_batch % num_replicas:
        raise ValueError(
            f"data.classes_per_batch ({classes_per_batch}) must be divisible by the number of "
            f"replicas ({num_replicas}) so that each replica gets whole classes; use a multiple of "
            f"{num_replicas}. Received: {classes_per_batch!r}")
    return classes_per_batch // num_replicas


def distribute_dataset(dataset, strategy):
    """`dataset` of global batches as a distributed dataset: each step, replica r gets the r-th
    contiguous chunk of the batch. Every worker builds the same dataset (same seed) and keeps
    its replicas' chunks (sharding by data: nothing to shard by file in a P x K sampler)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


# ----------------------------------------------------------------------------- inside a loss


# ----------------------------------------------------------------------------- training loop


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
    if _task(strategy)[0] is None:  # one machine: one backup
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
