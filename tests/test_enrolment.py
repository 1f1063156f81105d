"""Enrolment into an index file: append without rebuild, SIGKILL at any moment leaves the previous
index whole and a rerun resumes, and concurrent enrolments end in a valid index, never a torn one."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "inference"))
from fakes import FakeModel, make_folder  # noqa: E402

from embedding_net.index import IndexBackendError, load_index  # noqa: E402
from embedding_net.inference.enrolment import enroll  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import os, sys, time
sys.path.insert(0, {fakes!r})
from fakes import FakeModel
import embedding_net.index.container as container
from embedding_net.errors import UserError
from embedding_net.inference.enrolment import enroll

class Slow(FakeModel):
    def predict(self, images, **kwargs):
        time.sleep(float(os.environ.get("SLOW_PREDICT", "0")))
        return super().predict(images, **kwargs)

if os.environ.get("SLOW_WRITE"):  # stop in the middle of writing the new index file
    original = container._write_blob
    def slow(handle, value):
        entry = original(handle, value)
        open(os.environ["SLOW_WRITE"], "w").close()
        time.sleep(120)
        return entry
    container._write_blob = slow
weights, folder, output, timeout = sys.argv[1:5]
try:
    print(enroll(Slow(), weights, folder, output, append=True, lock_timeout=float(timeout), batch_size=2,
                 chunk_size=4, progress=False))
except UserError as error:
    print(f"error: {{error}}", file=sys.stderr)
    sys.exit(2)
""".format(fakes=os.path.join(os.path.dirname(os.path.abspath(__file__)), "inference"))


@pytest.fixture
def gallery(tmp_path):
    """(weights file, index path) of an exact index of 3 classes x 5 images."""
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"model weights")
    output = str(tmp_path / "g.enidx")
    enroll(FakeModel(), str(weights), make_folder(tmp_path / "a"), output, progress=False)
    return str(weights), output


def start(weights, folder, output, timeout=60.0, **env):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, weights, folder, output, str(timeout)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT, **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path, process, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_append_adds_images_and_classes_without_rebuilding(gallery, tmp_path):
    weights, output = gallery
    folder = make_folder(tmp_path / "b", classes=4, per_class=2, seed=3)
    os.rename(os.path.join(folder, "class_3"), os.path.join(folder, "new_class"))
    summary = enroll(FakeModel(), weights, folder, output, append=True, progress=False)
    index = load_index(output)
    assert summary["added"] == 8 and index.count == 23 == summary["images"]
    assert index.class_names == ("class_0", "class_1", "class_2", "new_class")
    assert index.model_sha256 and index.metadata["num_images"] == 23 and not os.path.exists(output + ".parts")
    with pytest.raises(IndexBackendError, match="--append keeps it"):
        enroll(FakeModel(), weights, folder, output, append=True, backend="hnsw", progress=False)


def test_sigkill_mid_append_keeps_the_old_index_and_a_rerun_resumes(gallery, tmp_path):
    weights, output = gallery
    before = open(output, "rb").read()
    folder = make_folder(tmp_path / "b", classes=4, per_class=5, seed=1)  # 20 images: 5 chunks of 4
    process = start(weights, folder, output, SLOW_PREDICT="0.3")
    wait_for(os.path.join(output + ".parts", "part-000001.npz"), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert load_index(output).count == 15 and open(output, "rb").read() == before
    rerun = FakeModel()
    enroll(rerun, weights, folder, output, append=True, batch_size=2, chunk_size=4, progress=False)
    assert rerun.images <= 12  # chunks 0 and 1 (8 images) were not embedded again
    assert load_index(output).count == 35 and not os.path.exists(output + ".parts")


def test_sigkill_while_writing_the_index_keeps_the_old_one(gallery, tmp_path):
    weights, output = gallery
    folder = make_folder(tmp_path / "b", classes=2, per_class=2, seed=1)
    marker = str(tmp_path / "writing")
    process = start(weights, folder, output, SLOW_WRITE=marker)
    wait_for(marker, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    index = load_index(output)
    assert index.count == 15 and len(index.class_names) == 3
    enroll(FakeModel(), weights, folder, output, append=True, lock_timeout=1, batch_size=2, chunk_size=4,
           progress=False)  # the lock is free again, and the finished parts are reused
    assert load_index(output).count == 19


def test_two_concurrent_enrolments_both_land(gallery, tmp_path):
    weights, output = gallery
    folders = [make_folder(tmp_path / name, classes=2, per_class=4, seed=seed) for name, seed in [("b", 1), ("c", 2)]]
    processes = [start(weights, folder, output, SLOW_PREDICT="0.05") for folder in folders]
    results = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    index = load_index(output)
    assert index.count == 15 + 8 + 8
    assert {p for p in index.paths if "/b/" in p or "/c/" in p} == {
        os.path.join(f, c, n) for f in folders for c in os.listdir(f) for n in os.listdir(os.path.join(f, c))}


def test_a_second_enrolment_gives_up_after_its_timeout_with_one_line(gallery, tmp_path):
    weights, output = gallery
    first = start(weights, make_folder(tmp_path / "b", classes=2, per_class=4, seed=1), output, SLOW_PREDICT="3")
    wait_for(output + ".parts", first)
    second = start(weights, make_folder(tmp_path / "c", classes=2, per_class=4, seed=2), output, timeout=0.5)
    _, error = second.communicate(timeout=60)
    assert second.returncode == 2 and error.count("\n") == 1
    assert error.startswith(f"error: index {output}: another process is writing it") and "gave up after 0.5 s" in error
    assert first.wait(timeout=120) == 0
    assert load_index(output).count == 23
    print(error.strip())
