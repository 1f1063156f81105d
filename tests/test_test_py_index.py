"""test.py with index galleries (.enidx), through the script as a user runs it: enrol, append,
classify, evaluate, --exact, and every mismatch or damage as one line, exit 2, nothing overwritten."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import saved_conv4_with_litert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_test_py(*args):
    return subprocess.run([sys.executable, "test.py", *args], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=300)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A model.keras with its LiteRT copy and config.yml, a labelled folder, and its index."""
    root = tmp_path_factory.mktemp("index_run")
    _, weights = saved_conv4_with_litert(root)
    (root / "config.yml").write_text("loss:\n  distance: euclidean\n")
    rng = np.random.default_rng(0)
    for folder, names in (("folder", ("circle", "cross", "triangle")), ("more", ("star",))):
        for name in names:
            os.makedirs(root / folder / name)
            for i in range(4):
                cv2.imwrite(str(root / folder / name / f"{i}.png"), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    for suffix in ("npz", "enidx"):
        result = run_test_py("--weights", weights, "--enroll", str(root / "folder"),
                             "--encodings", str(root / f"g.{suffix}"))
        assert result.returncode == 0 and "12 encodings of 3 classes" in result.stdout, result.stderr
    return root, weights


def test_index_and_npz_galleries_answer_alike_and_append_adds_a_class(run, tmp_path):
    root, weights = run
    image = str(root / "folder" / "cross" / "1.png")
    answers = [json.loads(run_test_py("--weights", weights, "--encodings", str(root / g), "--image", image,
                                      "--json").stdout) for g in ("g.npz", "g.enidx")]
    assert answers[0]["prediction"] == answers[1]["prediction"] == "cross"
    assert [n["class"] for n in answers[0]["nearest"]] == [n["class"] for n in answers[1]["nearest"]]
    gallery = str(tmp_path / "g.enidx")
    shutil.copy(root / "g.enidx", gallery)
    result = run_test_py("--weights", weights, "--enroll", str(root / "more"), "--encodings", gallery, "--append")
    assert result.returncode == 0 and "16 encodings of 4 classes" in result.stdout, result.stderr
    star = json.loads(run_test_py("--weights", weights, "--encodings", gallery, "--image",
                                  str(root / "more" / "star" / "2.png"), "--json").stdout)
    assert star["prediction"] == "star"


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_data_metrics_through_the_index(run, tmp_path, backend):
    root, weights = run
    gallery = str(tmp_path / "g.enidx")
    result = run_test_py("--weights", weights, "--enroll", str(root / "folder"), "--encodings", gallery,
                         "--backend", backend, "--json")
    assert json.loads(result.stdout)["backend"] == backend
    metrics = json.loads(run_test_py("--weights", weights, "--encodings", gallery, "--data", str(root / "folder"),
                                     "--json").stdout)
    assert metrics["top1_accuracy"] == 1.0 and metrics["precision_at_1"] == 1.0 and metrics["queries"] == 12
    assert ("recall_at_10" in metrics) == (backend == "hnsw")
    exact = json.loads(run_test_py("--weights", weights, "--encodings", gallery, "--data", str(root / "folder"),
                                   "--exact", "--json").stdout)
    assert exact["backend"] == "exact" and "recall_at_10" not in exact


def damaged(kind, root, tmp_path):
    from embedding_net.index import EmbeddingIndex, load_index, save_index

    path = str(tmp_path / "bad.enidx")
    if kind in ("truncated", "corrupted"):
        data = bytearray(open(root / "g.enidx", "rb").read())
        if kind == "corrupted":
            data[4100] ^= 0xFF  # inside the first blob
        open(path, "wb").write(bytes(data[: len(data) // 2] if kind == "truncated" else data))
    elif kind == "other_model":
        index = load_index(str(root / "g.enidx"))
        save_index(index, path, model_sha256="0" * 64)
    else:
        dimension, distance = (3, "euclidean") if kind == "other_dimension" else (16, "cosine")
        save_index(EmbeddingIndex.build(np.eye(dimension, dimension)[:2], [0, 1], ["a", "b"], distance=distance), path)
    return path


DAMAGE = [
    ("other_model", "was made by model 000000000000, not by the given model"),
    ("other_dimension", "holds 3-dimensional embeddings, the model makes 16-dimensional ones"),
    ("other_distance", "was built for distance 'cosine', not 'euclidean'"),
    ("truncated", "truncated or damaged"),
    ("corrupted", "checksum mismatch")]
BACKEND = ("unknown_backend", "unknown index backend 'nope'; available: exact, hnsw, usearch")


# --backend is an enrolment option: the unknown backend is tried with --append only.
@pytest.mark.parametrize("kind, message, action", [(k, m, a) for k, m in DAMAGE for a in ("--image", "--append")]
                         + [(*BACKEND, "--append")])
def test_mismatch_and_damage_exit_2_with_one_line_and_overwrite_nothing(run, tmp_path, kind, message, action):
    root, weights = run
    path = damaged("corrupted" if kind == "unknown_backend" else kind, root, tmp_path)
    if kind == "unknown_backend":
        shutil.copy(root / "g.enidx", path)
    before = digest(path)
    args = (["--image", str(root / "folder" / "cross" / "1.png")] if action == "--image" else
            ["--enroll", str(root / "more"), "--append"] + (["--backend", "nope"] if kind == "unknown_backend" else []))
    result = run_test_py("--weights", weights, "--encodings", path, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert digest(path) == before and not os.path.exists(path + ".parts")
    print(result.stderr.strip())
