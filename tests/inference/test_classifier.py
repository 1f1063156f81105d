"""Classifying from Python in three lines: the same answer as test.py for a file, and for the
same image given as an array of any size and channel count."""

import json

import cv2
import numpy as np
import pytest

from helpers import saved_conv4_with_litert
from embedding_net.cli.test import main as run_test_py
from embedding_net.data.images import prepare_image, read_image
from embedding_net.inference import Classifier


def _shapes(folder):
    """Three classes of drawn shapes, 105 x 105 grayscale like Omniglot, 3 drawings each."""
    draw = {"circle": lambda im, s: cv2.circle(im, (52, 52), 30 + s, 0, 3),
            "cross": lambda im, s: (cv2.line(im, (20 + s, 20), (85, 85 - s), 0, 4), cv2.line(im, (85, 20), (20, 85), 0, 4)),
            "triangle": lambda im, s: cv2.polylines(im, [np.array([[52, 15 + s], [15, 90], [90, 90]])], True, 0, 3)}
    for name, shape in draw.items():
        (folder / name).mkdir(parents=True)
        for s in range(3):
            image = np.full((105, 105), 255, np.uint8)
            shape(image, 4 * s)
            cv2.imwrite(str(folder / name / f"{s}.png"), image)
    query = np.full((105, 105), 255, np.uint8)
    cv2.circle(query, (50, 55), 33, 0, 4)
    cv2.imwrite(str(folder.parent / "query.png"), query)
    return str(folder.parent / "query.png")


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifier")
    _, weights = saved_conv4_with_litert(root)
    query = _shapes(root / "shapes")
    gallery = str(root / "shapes.npz")
    assert run_test_py(["--weights", weights, "--enroll", str(root / "shapes"), "--encodings", gallery]) == 0
    return weights, gallery, query


def test_a_file_gets_test_py_s_answer(enrolled, capsys):
    weights, gallery, query = enrolled
    capsys.readouterr()
    assert run_test_py(["--weights", weights, "--encodings", gallery, "--image", query, "--json"]) == 0
    expected = json.loads(capsys.readouterr().out.splitlines()[0])
    prediction = Classifier.load(weights, encodings=gallery).classify(query)
    assert prediction.label == expected["prediction"]
    assert prediction.distance == pytest.approx(expected["distance"], abs=1e-6)
    assert [name for name, _ in prediction.nearest] == [n["class"] for n in expected["nearest"]]


def test_an_array_of_any_size_and_channels_gets_the_file_s_answer(enrolled):
    weights, gallery, query = enrolled
    classifier = Classifier.load(weights, encodings=gallery)
    from_file = classifier.classify(query)
    gray = cv2.imread(query, cv2.IMREAD_GRAYSCALE)                   # a raw 105 x 105 array
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full_like(gray[:, :, None], 255)], axis=2)
    for image in (gray, gray[:, :, None], rgb, rgba, gray.astype(np.uint16) * 257, gray / 255.0):
        answer = classifier.classify(image)
        assert answer.label == from_file.label, image.shape
        assert answer.distance == pytest.approx(from_file.distance, abs=1e-5), (image.shape, image.dtype)
    assert [p.label for p in classifier.classify_many([query, gray])] == [from_file.label] * 2
    with pytest.raises(ValueError, match=r"Received: shape \(5,\), dtype int64"):
        classifier.classify(np.arange(5))


def test_the_one_resizing_is_read_image_s(tmp_path):
    rng = np.random.default_rng(0)
    bgra = rng.integers(0, 256, (61, 47, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (61, 47, 3), dtype=np.uint16)
    cases = {"gray.png": rng.integers(0, 256, (61, 47), dtype=np.uint8), "colour.png": bgra[:, :, :3],
             "alpha.png": bgra, "deep.png": deep}
    for name, stored in cases.items():
        path = str(tmp_path / name)
        cv2.imwrite(path, stored)
        as_rgb = stored if stored.ndim == 2 else cv2.cvtColor(stored, cv2.COLOR_BGRA2RGBA if stored.shape[2] == 4
                                                              else cv2.COLOR_BGR2RGB)
        for size, channels in (((28, 28), 1), ((28, 28), 3), ((100, 80), 3), (None, 3)):
            np.testing.assert_array_equal(prepare_image(as_rgb, size, channels), read_image(path, size, channels),
                                          err_msg=f"{name} {size} {channels}")
