"""The `tf.distribute` strategy of `train.distribute`, the chief / worker split of output
folders, and the P x K constraint of splitting a global batch across replicas. The training
loop for several workers is `embedding_net.training.distributed`; the module docstring there
says how the pieces fit.
"""

import json
import os

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


def task_of(strategy):
    """`(task_type, task_id, jobs)` of a multi-worker strategy, `(None, None, ())` otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().jobs:
        return None, None, ()
    return resolver.task_type, resolver.task_id, tuple(resolver.cluster_spec().jobs)


def is_chief(strategy):
    """True on the worker whose files count: the `chief` task, else worker 0; always True on
    one machine."""
    task_type, task_id, jobs = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in jobs


def worker_dir(directory, strategy):
    """`directory` on the chief; `directory/workertemp_<index>` on every other worker, so that
    all of them run the same saving code without writing over the chief's files. A worker's own
    folder also holds its `BackupAndRestore` state, from which it resumes."""
    if is_chief(strategy):
        return directory
    return os.path.join(directory, f"workertemp_{task_of(strategy)[1]}")


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
