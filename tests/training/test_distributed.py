"""Distributed training: cross-replica mining on two logical CPU devices (MirroredStrategy),
`model.fit` and `fit_distributed` there, and two MultiWorkerMirroredStrategy workers on
127.0.0.1. Each scenario runs `tests/distributed_driver.py` in fresh processes, because logical
devices and collectives must be configured before TensorFlow initialises."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from embedding_net.training.strategy import (
    STRATEGIES,
    build_strategy,
    check_classes_per_replica,
    read_tf_config,
)

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_driver.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(DRIVER)))
TIMEOUT = 300  # seconds: a worker waiting for a peer that died would otherwise hang the suite


def driver_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("tf_config", "http_proxy", "https_proxy", "all_proxy", "grpc_proxy")}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=ROOT, **extra)
    return env


def start_driver(mode, out_dir, **env):
    return subprocess.Popen([sys.executable, DRIVER, mode, str(out_dir)], cwd=ROOT, env=driver_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def collect(processes):
    """The RESULTS of every driver process; kills them all and fails with their output if any
    fails or outlives `TIMEOUT`."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail("distributed driver timed out:\n" + "\n".join(outputs))
    results = []
    for process, output in zip(processes, outputs):
        lines = [line for line in output.splitlines() if line.startswith("RESULTS ")]
        if process.returncode != 0 or not lines:
            pytest.fail(f"distributed driver failed ({process.returncode}):\n{output[-6000:]}")
        results.append(json.loads(lines[-1][len("RESULTS "):]))
    return results


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# ----------------------------------------------------------------------------- two logical CPUs


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """The results of the `mirrored` scenario (see `distributed_driver.mirrored`)."""
    out_dir = tmp_path_factory.mktemp("mirrored")
    return collect([start_driver("mirrored", out_dir)])[0], out_dir


LOSSES = ("triplet_all", "triplet_hard", "triplet_semi_hard", "contrastive", "multi_similarity",
          "multi_similarity_mined", "supcon", "circle", "proxy_anchor")


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_cross_replica_loss_and_gradients_match_one_device(mirrored, name):
    results = mirrored[0]["equality"]
    assert results["replicas"] == 2
    entry = results[name]
    assert entry["cross_replica"]["loss"] == pytest.approx(entry["one_device"], rel=1e-5)
    # The gradients summed over replicas (what the optimizer applies) are the one-device ones.
    assert entry["cross_replica"]["gradient_error"] < 1e-5
    if "fit_loss" in entry["cross_replica"]:  # one model.fit SGD step under MirroredStrategy
        assert entry["cross_replica"]["fit_loss"] == pytest.approx(entry["one_device"], rel=1e-5)
        assert entry["cross_replica"]["fit_update_error"] < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSES)
def test_per_replica_mining_differs_from_one_device(mirrored, name):
    """Without cross_replica each replica mines its own half: another loss, other gradients."""
    entry = mirrored[0]["equality"][name]
    assert abs(entry["per_replica"]["loss"] - entry["one_device"]) > 1e-3 * entry["one_device"]
    assert entry["per_replica"]["gradient_error"] > 1e-2


@pytest.mark.slow
def test_cross_batch_memory_on_replicas_matches_one_device(mirrored):
    """Every replica enqueues the global batch: all hold the one-device memory, and the steps
    after it fills (3 and 4) give the one-device losses and weights."""
    memory = mirrored[0]["memory"]
    assert memory["replicas"] == 2 and memory["enqueued"] == 4 * 16
    assert max(memory["memory_errors"]) < 1e-5
    assert memory["losses"] == pytest.approx(memory["one_device_losses"], rel=1e-4)
    assert memory["weight_error"] < 1e-4


@pytest.mark.slow
def test_model_fit_under_mirrored_strategy_trains_over_pk_batches(mirrored):
    results, out_dir = mirrored
    history = results["fit"]["fit"]
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["loss"]))
    assert results["fit"]["trained"] > 0
    assert {"positive_distance", "negative_distance", "active_triplets", "learning_rate"} <= set(history)
    assert (out_dir / "fit.csv").is_file()


@pytest.mark.slow
def test_fit_distributed_matches_model_fit(mirrored):
    """The custom loop takes the same steps and logs the same values as `model.fit`."""
    results, out_dir = mirrored
    fit, loop = results["fit"]["fit"], results["fit"]["loop"]
    assert results["fit"]["loop_vs_fit"] == 0.0
    assert set(loop) == set(fit) and "val_loss" in fit and "learning_rate" in fit
    for name in fit:
        np.testing.assert_allclose(loop[name], fit[name], rtol=1e-5)
    header = (out_dir / "loop.csv").read_text().splitlines()[0]
    assert header == (out_dir / "fit.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_fit_distributed_resumes_from_backup(mirrored):
    """Interrupted after epoch 1, resumed by `BackupAndRestore` in a fresh model: epoch 2 only,
    and the weights of the uninterrupted run; the backup is deleted at the end."""
    results = mirrored[0]["fit"]
    assert len(results["resumed"]["loss"]) == 1
    assert results["resumed"]["loss"][0] == pytest.approx(results["loop"]["loss"][1], rel=1e-6)
    assert results["resumed_vs_loop"] == 0.0
    assert not results["backup_left"]


# ----------------------------------------------------------------------------- two workers


@pytest.mark.slow
def test_multi_worker_trains_and_chief_writes_one_model(tmp_path):
    from embedding_net.models.builders import load_embedding_model

    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = [start_driver("multi_worker", tmp_path,
                            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
               for i in range(2)]
    chief, other = collect(workers)
    assert (chief["task"], chief["chief"], other["chief"]) == (0, True, False)
    assert chief["replicas"] == 2
    # Both workers log the same reduced values; the first step's loss is the one-device loss of
    # the global batch (worker i got the i-th half of the same batch, mined together).
    assert chief["history"] == other["history"]
    assert len(chief["history"]["loss"]) == 2 and np.all(np.isfinite(chief["history"]["loss"]))
    assert chief["first_batch_loss"] == pytest.approx(chief["reference_loss"], rel=1e-5)
    # Synchronous training: the same weights on both workers.
    weights = [np.load(tmp_path / f"weights_{i}.npz") for i in range(2)]
    assert len(weights[0].files) == len(weights[1].files) > 0
    for key in weights[0].files:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])
    # Only the chief's files remain: one model, its checkpoints and history.
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["checkpoints/best.keras", "checkpoints/last.keras", "history.csv", "model.keras",
                       "weights_0.npz", "weights_1.npz"]
    model = load_embedding_model(str(tmp_path / "model.keras"))  # safe_mode=True
    final = [weights[0][key] for key in weights[0].files]
    for saved, trained in zip(model.get_weights(), final):
        np.testing.assert_array_equal(saved, trained)
    assert "learning_rate" in (tmp_path / "history.csv").read_text().splitlines()[0]


# ----------------------------------------------------------------------------- errors


def test_build_strategy_rejects_unknown_name():
    with pytest.raises(ValueError, match=r"none, mirrored, multi_worker\. Received: 'horovod'"):
        build_strategy("horovod")
    assert STRATEGIES == ("none", "mirrored", "multi_worker")


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable, which is not set"):
        build_strategy("multi_worker")


@pytest.mark.parametrize(
    "raw, problem",
    [
        ("{not json", "a \"cluster\" object"),
        ('{"task": {"type": "worker", "index": 0}}', "a \"cluster\" object"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "\"chief\" and \"worker\" only"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty list"),
        ('{"cluster": {"worker": ["hostonly"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}}', "\"task\" whose \"type\""),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', r"in \[0, 2\)"),
    ],
)
def test_malformed_tf_config_is_echoed(monkeypatch, raw, problem):
    monkeypatch.setenv("TF_CONFIG", raw)
    with pytest.raises(ValueError) as info:
        build_strategy("multi_worker")
    message = str(info.value)
    assert "TF_CONFIG must be JSON with" in message
    assert repr(raw) in message
    assert __import__("re").search(problem, message)


def test_valid_tf_config_is_parsed():
    cluster, task = read_tf_config(
        '{"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}')
    assert cluster == {"chief": ["a:1"], "worker": ["b:2", "c:3"]}
    assert task == {"type": "worker", "index": 1}


def test_classes_per_replica():
    assert check_classes_per_replica(8, 1) == 8
    assert check_classes_per_replica(8, 4) == 2
    with pytest.raises(ValueError, match=r"classes_per_batch \(6\) must be divisible by the number of replicas \(4\)"):
        check_classes_per_replica(6, 4)
    with pytest.raises(ValueError, match="Received: 3"):
        check_classes_per_replica(3, 2)


class _FakeMultiWorker:
    """What `is_chief` and `worker_dir` read from a MultiWorkerMirroredStrategy."""

    def __init__(self, cluster, task_type, task_id):
        import tensorflow as tf

        self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)


@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        ({"worker": ["a:1", "b:2"]}, "worker", 0, True),
        ({"worker": ["a:1", "b:2"]}, "worker", 1, False),
        ({"chief": ["c:0"], "worker": ["a:1", "b:2"]}, "chief", 0, True),
        ({"chief": ["c:0"], "worker": ["a:1", "b:2"]}, "worker", 0, False),
    ],
)
def test_chief_and_worker_dirs(cluster, task_type, task_id, chief):
    from embedding_net.training.strategy import is_chief, worker_dir

    strategy = _FakeMultiWorker(cluster, task_type, task_id)
    assert is_chief(strategy) is chief
    expected = "/runs/a" if chief else os.path.join("/runs/a", f"workertemp_{task_id}")
    assert worker_dir("/runs/a", strategy) == expected


def test_none_is_the_default_strategy():
    import tensorflow as tf

    from embedding_net.training.strategy import is_chief, worker_dir

    strategy = build_strategy("none")
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert is_chief(strategy)
    assert worker_dir("/runs/a", strategy) == "/runs/a"


# ----------------------------------------------------------------------------- through train.py


def test_train_py_on_two_workers_writes_one_run(omniglot_subset, tmp_path):
    """The README's recipe: the same train.py command on two workers with their TF_CONFIG."""
    from helpers import tiny_overrides
    from embedding_net.models.builders import load_embedding_model

    overrides = tiny_overrides(omniglot_subset, tmp_path, name="two_workers", export_litert=True) + [
        "train.distribute=multi_worker", "loss.cross_replica=true", "train.epochs=2",
        "train.steps_per_epoch=3", "evaluation.plots=true"]
    command = [sys.executable, "train.py", *[arg for item in overrides for arg in ("--set", item)]]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    processes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=driver_env(TF_CONFIG=json.dumps({"cluster": cluster,
                                                                       "task": {"type": "worker", "index": i}})))
                 for i in range(2)]
    try:
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    run_dir = tmp_path / "two_workers"
    assert sorted(os.listdir(run_dir)) == sorted(  # the other worker's folder is gone
        ["checkpoints", "config.yml", "confusion_matrix.csv", "encodings.enidx", "encodings.enidx.lock",
         "encodings.npz", "history.csv", "logs",  # TensorBoard's, written by the chief alone
         "metrics.json", "model.keras", "model.tflite", "model.tflite.json", "per_class_accuracy.csv", "plots"])
    with open(run_dir / "history.csv") as handle:
        assert len(handle.read().strip().splitlines()) == 3  # header + 2 epochs
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["top1_accuracy"] <= 1.0
    assert load_embedding_model(str(run_dir / "model.keras")).output_shape == (None, 16)


def test_training_run_under_mirrored_strategy_on_two_logical_devices(omniglot_subset, tmp_path):
    script = f"""
import json, sys, tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path.insert(0, "tests")
from helpers import tiny_overrides
from embedding_net.training import runner as training
from embedding_net.config.loading import load_config
from embedding_net.errors import ConfigError
overrides = tiny_overrides({str(omniglot_subset)!r}, {str(tmp_path)!r}, name="mirrored") + [
    "train.distribute=mirrored", "loss.cross_replica=true", "train.epochs=1"]
metrics = training.run(load_config(None, overrides))
try:
    training.run(load_config(None, overrides + ["data.classes_per_batch=7"]))
    odd = None
except ConfigError as error:
    odd = str(error)
print("RESULTS " + json.dumps({{"top1": metrics["top1_accuracy"], "odd": odd}}))
"""
    process = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=driver_env(), capture_output=True,
                             text=True, timeout=TIMEOUT)
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULTS ")]
    assert process.returncode == 0 and lines, process.stdout[-3000:] + process.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULTS "):])
    assert 0.0 <= result["top1"] <= 1.0
    assert "data.classes_per_batch (7) must be divisible by the number of replicas (2)" in result["odd"]
    assert os.path.isfile(tmp_path / "mirrored" / "model.keras")
