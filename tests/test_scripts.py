"""The scripts as a user runs them: train.py, then test.py on an image, and their errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(omniglot_subset, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("script_runs")
    overrides = [arg for item in tiny_overrides(omniglot_subset, work_dir, "cli", export_litert=True) for arg in ("--set", item)]
    result = run_script("train.py", "--config", os.path.join(ROOT, "configs", "omniglot.yml"), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return os.path.join(str(work_dir), "cli"), result.stdout


def test_train_prints_the_metrics(trained):
    run_dir, stdout = trained
    assert f"outputs in {run_dir}" in stdout
    assert "oneshot_accuracy:" in stdout and "top1_accuracy:" in stdout


def test_test_py_predicts_an_enrolled_val_image(trained, omniglot_subset):
    run_dir, _ = trained
    image = os.path.join(omniglot_subset, "val", "Atlantean__character09", "1019_08.png")
    result = run_script("test.py", "--weights", f"{run_dir}/model.keras",
                        "--encodings", f"{run_dir}/encodings.npz", "--image", image)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    # The image is itself in the reference, so its own class is nearest at distance ~0.
    assert lines[0].startswith(f"{image}: Atlantean__character09 (distance 0.0")
    assert len(lines) == 6 and lines[1].strip().startswith("1. Atlantean__character09")

    result = run_script("test.py", "--weights", f"{run_dir}/model.keras",
                        "--encodings", f"{run_dir}/encodings.npz", "--image", image, "--json")
    payload = json.loads(result.stdout)
    assert payload["prediction"] == "Atlantean__character09"
    assert len(payload["nearest"]) == 5
    distances = [item["distance"] for item in payload["nearest"]]
    assert distances == sorted(distances)


def test_enroll_recognises_new_classes_with_one_image_each(trained, tmp_path):
    import cv2

    run_dir, _ = trained
    shapes = {}
    for name in ("circle", "square", "cross"):
        canvas = np.full((28, 28), 255, np.uint8)
        if name == "circle":
            cv2.circle(canvas, (14, 14), 9, 0, 2)
        elif name == "square":
            cv2.rectangle(canvas, (5, 5), (22, 22), 0, 2)
        else:
            cv2.line(canvas, (4, 4), (23, 23), 0, 2)
            cv2.line(canvas, (23, 4), (4, 23), 0, 2)
        os.makedirs(tmp_path / "enroll" / name)
        cv2.imwrite(str(tmp_path / "enroll" / name / "only.png"), canvas)
        shapes[name] = canvas
    out = tmp_path / "new.npz"
    result = run_script("test.py", "--weights", f"{run_dir}/model.keras", "--enroll",
                        str(tmp_path / "enroll"), "--encodings", str(out))
    assert result.returncode == 0, result.stderr
    assert "3 encodings of 3 classes" in result.stdout
    query = tmp_path / "query.png"
    cv2.imwrite(str(query), shapes["square"])
    result = run_script("test.py", "--weights", f"{run_dir}/model.keras", "--encodings", str(out),
                        "--image", str(query), "--json")
    assert json.loads(result.stdout)["prediction"] == "square"


@pytest.mark.parametrize("case", ["missing_image", "not_an_image", "not_a_model", "wrong_dimension",
                                  "not_encodings"])
def test_test_py_user_errors_exit_2_with_one_line(trained, tmp_path, case, omniglot_subset):
    from embedding_net.inference.encodings import make_encodings, save_encodings

    run_dir, _ = trained
    image = os.path.join(omniglot_subset, "val", "Atlantean__character09", "1019_08.png")
    weights, encodings = f"{run_dir}/model.keras", f"{run_dir}/encodings.npz"
    if case == "missing_image":
        image = str(tmp_path / "nope.png")
    elif case == "not_an_image":
        image = str(tmp_path / "text.png")
        open(image, "w").write("hello")
    elif case == "not_a_model":
        weights = str(tmp_path / "model.keras")
        open(weights, "w").write("not a zip")
    elif case == "wrong_dimension":
        encodings = str(tmp_path / "other.npz")
        save_encodings(encodings, make_encodings(np.eye(3), [0, 1, 1], ["a", "b"], ["x", "y", "z"]))
    else:
        encodings = os.path.join(ROOT, "README.md")
    result = run_script("test.py", "--weights", weights, "--encodings", encodings, "--image", image)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    named = {"missing_image": "nope.png", "not_an_image": "text.png", "not_a_model": "model.keras",
             "wrong_dimension": "other.npz", "not_encodings": "README.md"}[case]
    assert named in errors[0]


@pytest.mark.parametrize("override, message", [
    ("train.epochz=1", "unknown key 'train.epochz'; valid keys in 'train': epochs, steps_per_epoch"),
    ("train.epochs=zero", "train.epochs must be an integer, received: 'zero'"),
    ("loss.mining=easy", "loss.mining of model.architecture embedding must be one of all, hard, semi_hard, received: 'easy'"),
    ("loss.scale=30", "loss.scale is not a setting of the triplet loss; it takes: cross_replica, distance, margin, memory_size, memory_warmup_steps, mining, soft_margin"),
    ("loss.negatives_selection_mode=semihard", "loss.negatives_selection_mode has moved to loss.mining"),
])
def test_train_py_config_errors_exit_2_with_one_line(override, message):
    result = run_script("train.py", "--set", override)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")


def test_test_py_classifies_several_images_and_folders_into_csv(trained, omniglot_subset, tmp_path):
    import csv

    run_dir, _ = trained
    folder = os.path.join(omniglot_subset, "val", "Atlantean__character01")
    single = os.path.join(omniglot_subset, "val", "Atlantean__character09", "1019_08.png")
    out = tmp_path / "predictions.csv"
    result = run_script("test.py", "--weights", f"{run_dir}/model.keras", "--encodings",
                        f"{run_dir}/encodings.npz", "--image", single, folder, "--output", str(out),
                        "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    objects = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(objects) == 21
    assert objects[0]["image"] == single and len(objects[0]["nearest"]) == 3
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [o["image"] for o in objects]
    assert rows[0]["prediction"] == "Atlantean__character09"
    assert len(rows[0]["top_k"].split(";")) == 3


def test_test_py_threshold_says_unknown(trained, omniglot_subset):
    run_dir, _ = trained
    image = os.path.join(omniglot_subset, "val", "Atlantean__character09", "1019_08.png")
    result = run_script("test.py", "--weights", f"{run_dir}/model.keras", "--encodings",
                        f"{run_dir}/encodings.npz", "--image", image, "--threshold", "-1", "--json")
    payload = json.loads(result.stdout)
    assert payload["prediction"] == "unknown"
    assert payload["nearest"][0]["class"] == "Atlantean__character09"


def test_test_py_evaluates_a_labelled_folder(trained, omniglot_subset):
    run_dir, _ = trained
    result = run_script("test.py", "--weights", f"{run_dir}/model.keras", "--encodings",
                        f"{run_dir}/encodings.npz", "--data", os.path.join(omniglot_subset, "val"), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    # The val images are themselves in the reference encodings: each finds itself first.
    assert metrics["protocol"] == "query_vs_reference" and metrics["queries"] == 26 * 20
    assert metrics["top1_accuracy"] == 1.0 and metrics["precision_at_1"] == 1.0
    assert metrics["images_of_unknown_classes"] == 0
    assert 0.0 <= metrics["map_at_r"] <= 1.0

    result = run_script("test.py", "--weights", f"{run_dir}/model.keras", "--encodings",
                        f"{run_dir}/encodings.npz", "--data", os.path.join(omniglot_subset, "val"))
    assert "map_at_r: " in result.stdout and "top1_accuracy: 1.0000" in result.stdout


def test_train_py_missing_dataset_folder_exits_2_with_one_line(tmp_path):
    result = run_script("train.py", "--set", f"data.root={tmp_path / 'nowhere'}", "--set", "data.dataset=null",
                        "--set", f"output.work_dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # TensorFlow's own start-up log lines may come first; ours is the one error line, and the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data.root folder not found: {tmp_path / 'nowhere'}"]
    assert result.stderr.strip().splitlines()[-1] == errors[0]


def test_a_mistyped_data_root_on_the_default_config_is_an_error_and_creates_nothing(tmp_path):
    # The default config reads the shipped Omniglot; a folder the user names wins, and must exist.
    cache = tmp_path / "cache"
    result = subprocess.run([sys.executable, "train.py", "--set", f"data.root={tmp_path / 'my_photoss'}",
                             "--set", f"output.work_dir={tmp_path / 'runs'}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=dict(os.environ, PYTHONPATH=ROOT, EMBEDDING_NET_CACHE=str(cache)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: data.root folder not found: {tmp_path / 'my_photoss'}"
    assert sorted(os.listdir(tmp_path)) == []  # no run folder, no Omniglot anywhere


def test_train_writes_a_litert_copy_and_test_py_answers_as_with_keras(trained, omniglot_subset):
    from embedding_net.inference.litert import fresh_litert_copy

    run_dir, _ = trained
    assert fresh_litert_copy(f"{run_dir}/model.keras") == f"{run_dir}/model.tflite"
    folder = os.path.join(omniglot_subset, "val", "Atlantean__character09")
    answers = []
    for extra in ([], ["--keras"]):
        result = run_script("test.py", "--weights", f"{run_dir}/model.keras", "--encodings",
                            f"{run_dir}/encodings.npz", "--image", folder, "--json", *extra)
        assert result.returncode == 0, result.stderr
        if not extra:  # no start-up noise from LiteRT (its XNNPACK INFO line) or TensorFlow
            assert result.stderr == "", result.stderr
        answers.append([json.loads(line) for line in result.stdout.splitlines()])
    litert, keras_answers = answers
    assert len(litert) == len(os.listdir(folder)) > 1
    for fast, slow in zip(litert, keras_answers):
        assert fast["image"] == slow["image"] and fast["prediction"] == slow["prediction"]
        np.testing.assert_allclose([d["distance"] for d in fast["nearest"]],
                                   [d["distance"] for d in slow["nearest"]], atol=1e-3)
