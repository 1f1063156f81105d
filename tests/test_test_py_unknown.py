"""test.py end to end, as issue #18 found it: a colour photograph queried against three enrolled
classes of drawings was answered "triangle". Now the enrolled gallery inherits the run's
threshold and carries class radii, and the photograph is "unknown" while a new drawing of an
enrolled class is still recognised."""

import json
import os

import cv2
import numpy as np
import pytest

from helpers import saved_conv4_with_litert

from embedding_net.cli.test import main
from embedding_net.index import read_manifest
from embedding_net.inference.encodings import make_encodings
from embedding_net.inference.gallery import save_encodings_index
from embedding_net.inference.litert import file_sha256

# A threshold that accepts anything, as the default run's 0.99 accepted china.jpg at 0.64.
RUN_THRESHOLD = 2.0


def drawing(shape, rng, strays=8):
    """A 40 x 40 black-on-white circle, cross or triangle with `strays` stray grey pixels. The
    model is untrained: only small differences keep a drawing near its class, and a new drawing
    with fewer strays lies well inside its class (this tests the plumbing; bench/unknown.py
    measures what a trained model gains)."""
    image = np.full((40, 40), 255, np.uint8)
    if shape == "circle":
        cv2.circle(image, (20, 20), 12, 0, 3)
    elif shape == "cross":
        cv2.line(image, (8, 8), (32, 32), 0, 3)
        cv2.line(image, (8, 32), (32, 8), 0, 3)
    else:
        cv2.polylines(image, [np.array([[20, 8], [8, 32], [32, 32]], np.int32)], True, 0, 3)
    image[rng.integers(0, 40, strays), rng.integers(0, 40, strays)] = 128
    return image


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder (model.keras, its LiteRT copy, config.yml, a gallery storing RUN_THRESHOLD),
    a folder of three classes of drawings, a new drawing of each class, and a photograph."""
    from sklearn.datasets import load_sample_image

    root = tmp_path_factory.mktemp("unknown_run")
    _, weights = saved_conv4_with_litert(root)
    (root / "config.yml").write_text("loss:\n  distance: euclidean\n")
    vectors = np.eye(16, dtype=np.float32)[:4]
    save_encodings_index(str(root / "encodings.enidx"), make_encodings(
        vectors, [0, 0, 1, 1], ["a", "b"], ["1", "2", "3", "4"],
        {"distance": "euclidean", "threshold": RUN_THRESHOLD}),
        model_sha256=file_sha256(weights))
    rng = np.random.default_rng(0)
    for shape in ("circle", "cross", "triangle"):
        os.makedirs(root / "folder" / shape)
        for i in range(6):
            cv2.imwrite(str(root / "folder" / shape / f"{i}.png"), drawing(shape, rng))
        cv2.imwrite(str(root / f"new_{shape}.png"), drawing(shape, rng, strays=3))
    cv2.imwrite(str(root / "china.png"), load_sample_image("china.jpg")[:, :, ::-1])
    return root, weights


def answers(capsys, *argv):
    capsys.readouterr()
    assert main(list(argv)) == 0
    return {os.path.basename(row["image"]): row for row in map(json.loads, capsys.readouterr().out.splitlines())}


@pytest.mark.parametrize("suffix", ["enidx", "npz"])
def test_an_enrolled_gallery_answers_unknown_to_a_photograph(run, tmp_path, capsys, suffix):
    root, weights = run
    gallery = str(tmp_path / f"shapes.{suffix}")
    assert main(["--weights", weights, "--enroll", str(root / "folder"), "--encodings", gallery]) == 0
    assert "wrote 18 encodings of 3 classes" in capsys.readouterr().out
    if suffix == "enidx":
        metadata = read_manifest(gallery)["metadata"]
        assert metadata["threshold"] == RUN_THRESHOLD
        assert metadata["threshold_source"] == str(root / "encodings.enidx")
    images = [str(root / name) for name in ("china.png", "new_circle.png", "new_cross.png", "new_triangle.png")]
    found = answers(capsys, "--weights", weights, "--encodings", gallery, "--image", *images, "--json")
    assert {name: row["prediction"] for name, row in found.items()} == {
        "china.png": "unknown", "new_circle.png": "circle", "new_cross.png": "cross",
        "new_triangle.png": "triangle"}
    assert found["china.png"]["distance"] < RUN_THRESHOLD  # the threshold alone would have accepted it
    alone = answers(capsys, "--weights", weights, "--encodings", gallery, "--image", images[0], "--json",
                    "--threshold-only")
    assert alone["china.png"]["prediction"] == found["china.png"]["nearest"][0]["class"]
