"""Kill train.py with SIGKILL in the middle of a run; the same command resumes it."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train_command(root, work_dir, name, extra=()):
    overrides = tiny_overrides(root, work_dir, name) + ["train.epochs=4", "train.steps_per_epoch=20", *extra]
    return [sys.executable, "train.py", *[arg for item in overrides for arg in ("--set", item)]]


def run(command):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def read_history(run_dir):
    with open(os.path.join(run_dir, "history.csv")) as handle:
        return list(csv.DictReader(handle))


# The triplet generator mines with the live model a few prefetched batches ahead, so its runs
# are not bit-reproducible: for it the test checks the epochs, not the losses.
ARCHITECTURES = [
    pytest.param((), True, "val", id="in_batch"),
    pytest.param(("model.architecture=triplet", "data.batch_size=8"), False, "val", id="triplet_generator"),
    # The proxies live in the training model: its backup holds them and their optimizer state.
    pytest.param(("loss.name=proxy_anchor", "loss.mining=null", "loss.margin=null", "loss.distance=cosine"), True,
                 "train_loss", id="proxy_anchor"),  # its centres cannot score the new val characters
    # The cross-batch memory is in the training model's weights: the backup restores its queue.
    pytest.param(("loss.memory_size=32",), True, "val", id="cross_batch_memory"),
]


@pytest.mark.parametrize("extra, reproducible, selection", ARCHITECTURES)
def test_sigkill_then_the_same_command_resumes_and_matches_an_uninterrupted_run(
        omniglot_subset, tmp_path, extra, reproducible, selection):
    command = train_command(omniglot_subset, tmp_path, "killed", extra)
    run_dir = tmp_path / "killed"
    metadata = run_dir / "backup" / "training_metadata.json"
    process = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Wait until two epochs are backed up, then kill without warning.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if metadata.exists():
                try:
                    if json.loads(metadata.read_text())["epoch"] >= 2:
                        break
                except (ValueError, KeyError):
                    pass  # caught between write and close: look again
            time.sleep(0.05)
        assert process.poll() is None, "training ended before it could be interrupted"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    completed = json.loads(metadata.read_text())["epoch"]
    assert 2 <= completed < 4
    assert not (run_dir / "model.keras").exists()

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at epoch {completed + 1} of 4" in resumed.stdout.splitlines()
    history = read_history(run_dir)
    assert [int(row["epoch"]) for row in history] == [0, 1, 2, 3]  # no epoch twice, none lost
    assert not (run_dir / "backup").exists()  # removed once training finished
    with open(run_dir / "metrics.json") as handle:
        assert json.load(handle)["checkpoint_selection"] == selection
    if not reproducible:
        return
    straight = run(train_command(omniglot_subset, tmp_path, "straight", extra))
    assert straight.returncode == 0, straight.stderr[-2000:]
    reference = read_history(tmp_path / "straight")
    for row, expected in zip(history, reference):
        assert float(row["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-3)
    with open(run_dir / "metrics.json") as a, open(tmp_path / "straight" / "metrics.json") as b:
        resumed_metrics, straight_metrics = json.load(a), json.load(b)
    for key in ("top1_accuracy", "map_at_r", "oneshot_accuracy"):
        assert resumed_metrics[key] == pytest.approx(straight_metrics[key], abs=0.01)


def test_a_changed_config_does_not_resume_silently(omniglot_subset, tmp_path):
    run_dir = tmp_path / "changed"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    from embedding_net.config.loading import load_config, save_config

    save_config(load_config(None, tiny_overrides(omniglot_subset, tmp_path, "changed")), str(run_dir / "config.yml"))
    result = run(train_command(omniglot_subset, tmp_path, "changed"))
    assert result.returncode == 2
    assert "holds an interrupted run made with another config" in result.stderr
