"""Encodings: centroids, the pickle-free .npz format, atomic saving, classify and enrolment."""

import json
import os

import cv2
import numpy as np
import pytest

from embedding_net.inference import encodings as encodings_module
from embedding_net.data.images import read_image
from embedding_net.inference.encodings import (
    FORMAT_VERSION,
    check_compatible,
    classify,
    enroll_folder,
    load_encodings,
    make_encodings,
    save_encodings,
)
from embedding_net.errors import EncodingsError

NAMES = ["ärger", "bär", "日本"]


@pytest.fixture
def sample():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(7, 5))
    labels = [2, 0, 1, 0, 2, 2, 0]
    paths = [f"/dätä/{NAMES[label]}/bïld{i}.png" for i, label in enumerate(labels)]
    return make_encodings(embeddings, labels, NAMES, paths, metadata={"distance": "cosine", "note": "ß"})


@pytest.fixture(scope="module")
def tiny_model():
    from embedding_net.models.builders import build_embedding_model

    return build_embedding_model("conv4", (16, 16, 1), 8)


def raw_arrays(encodings):
    """The arrays `save_encodings` writes, for crafting broken files."""
    return {
        "embeddings": encodings.embeddings,
        "labels": encodings.labels,
        "class_names": np.array(encodings.class_names, dtype=str),
        "paths": np.array(encodings.paths, dtype=str),
        "centroids": encodings.centroids,
        "metadata": np.array(json.dumps(encodings.metadata)),
    }


def write_npz(path, arrays, **overrides):
    arrays = {**arrays, **overrides}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


# ----------------------------------------------------------------------------- make / save / load


def test_make_encodings_centroids_and_metadata(sample):
    assert sample.embeddings.dtype == np.float32 and sample.labels.dtype == np.int32
    assert sample.centroids.shape == (3, 5) and sample.centroids.dtype == np.float32
    for c in range(3):
        rows = [e for e, label in zip(sample.embeddings.astype(np.float64), sample.labels) if label == c]
        mean = sum(rows) / len(rows)
        np.testing.assert_allclose(sample.centroids[c], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(sample.centroids, axis=1), 1.0, rtol=1e-6)
    assert sample.metadata == {"distance": "cosine", "note": "ß", "format_version": FORMAT_VERSION,
                               "embedding_size": 5, "num_images": 7, "num_classes": 3}


def test_empty_class_centroid_is_zero():
    encodings = make_encodings(np.eye(3), [0, 0, 2], ["a", "b", "c"], ["x", "y", "z"])
    np.testing.assert_array_equal(encodings.centroids[1], 0.0)
    np.testing.assert_allclose(encodings.centroids[0], [2 ** -0.5, 2 ** -0.5, 0], rtol=1e-6)


def test_save_load_round_trip(tmp_path, sample):
    path = str(tmp_path / "ünï" / "enc.npz")  # the folder is created
    save_encodings(path, sample)
    loaded = load_encodings(path)
    np.testing.assert_array_equal(loaded.embeddings, sample.embeddings)
    np.testing.assert_array_equal(loaded.labels, sample.labels)
    np.testing.assert_array_equal(loaded.centroids, sample.centroids)
    assert loaded.embeddings.dtype == np.float32 and loaded.labels.dtype == np.int32
    assert loaded.class_names == NAMES and all(type(n) is str for n in loaded.class_names)
    assert loaded.paths == sample.paths and all(type(p) is str for p in loaded.paths)
    assert loaded.metadata == sample.metadata
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(raw_arrays(sample))
        assert npz["class_names"].dtype.kind == "U"


def test_object_array_rejected_as_pickled(tmp_path, sample):
    path = write_npz(tmp_path / "evil.npz", raw_arrays(sample),
                     embeddings=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EncodingsError, match="pickled"):
        load_encodings(path)


def test_not_an_npz_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello, not a zip\n")
    with pytest.raises(EncodingsError, match="not an encodings file"):
        load_encodings(str(path))


def test_missing_file(tmp_path):
    with pytest.raises(EncodingsError, match="not found"):
        load_encodings(str(tmp_path / "nope.npz"))


def test_missing_keys_are_listed(tmp_path, sample):
    path = write_npz(tmp_path / "partial.npz", raw_arrays(sample), centroids=None, paths=None)
    with pytest.raises(EncodingsError) as info:
        load_encodings(path)
    message = str(info.value)
    assert "missing" in message and "paths" in message and "centroids" in message
    assert "embeddings" not in message.split("missing")[1]


@pytest.mark.parametrize("override, message", [
    ({"labels": np.array([0, 1], np.int32)}, "matching lengths"),      # fewer labels
    ({"paths": np.array(["a", "b"])}, "matching lengths"),             # fewer paths
    ({"embeddings": np.zeros(7, np.float32)}, "2-D float"),            # not 2-D
    ({"labels": np.zeros((7, 1), np.int32)}, "1-D integer"),           # not 1-D
], ids=["labels", "paths", "embeddings-1d", "labels-2d"])
def test_inconsistent_lengths_rejected(tmp_path, sample, override, message):
    path = write_npz(tmp_path / "bad.npz", raw_arrays(sample), **override)
    with pytest.raises(EncodingsError, match=message):
        load_encodings(path)


@pytest.mark.parametrize("bad_label", [-1, 3])
def test_labels_out_of_range_rejected(tmp_path, sample, bad_label):
    labels = sample.labels.copy()
    labels[4] = bad_label
    path = write_npz(tmp_path / "bad.npz", raw_arrays(sample), labels=labels)
    with pytest.raises(EncodingsError, match="outside class_names"):
        load_encodings(path)


def test_invalid_metadata_rejected(tmp_path, sample):
    path = write_npz(tmp_path / "bad.npz", raw_arrays(sample), metadata=np.array("{not json"))
    with pytest.raises(EncodingsError, match="metadata"):
        load_encodings(path)


def test_save_leaves_no_temporary_files(tmp_path, sample):
    save_encodings(str(tmp_path / "enc.npz"), sample)
    save_encodings(str(tmp_path / "enc.npz"), sample)  # overwriting too
    assert os.listdir(tmp_path) == ["enc.npz"]


def test_failed_save_keeps_previous_file(tmp_path, sample, monkeypatch):
    path = str(tmp_path / "enc.npz")
    save_encodings(path, sample)
    before = open(path, "rb").read()

    def broken_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(encodings_module.np, "savez", broken_savez)
    changed = make_encodings(np.ones((2, 5)), [0, 1], ["x", "y"], ["p", "q"])
    with pytest.raises(OSError, match="disk full"):
        save_encodings(path, changed)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["enc.npz"]
    assert load_encodings(path).class_names == NAMES


# ----------------------------------------------------------------------------- classify


def test_classify_hand_case():
    embeddings = [[0.0, 0.0], [10.0, 0.0], [0.0, 3.0], [4.0, 4.0], [9.0, 0.0]]
    encodings = make_encodings(embeddings, [0, 1, 2, 1, 0], ["a", "b", "c"], list("vwxyz"))
    # Query (8, 0): a's nearest image is (9, 0) at 1 (not its centroid), b's is (10, 0) at 2,
    # c's is (0, 3) at sqrt(73).
    result = classify([[8.0, 0.0], [0.0, 2.0]], encodings, top_k=2)
    assert [name for name, _ in result[0]] == ["a", "b"]
    assert [d for _, d in result[0]] == pytest.approx([1.0, 2.0])
    assert [name for name, _ in result[1]] == ["c", "a"]
    assert [d for _, d in result[1]] == pytest.approx([1.0, 2.0])
    full = classify([[8.0, 0.0]], encodings, top_k=10)[0]
    assert [name for name, _ in full] == ["a", "b", "c"]
    assert [d for _, d in full] == pytest.approx([1.0, 2.0, 73 ** 0.5])
    assert all(type(d) is float for _, d in full)
    squared = classify([[8.0, 0.0]], encodings, top_k=1, distance="squared_euclidean")
    assert squared == [[("a", pytest.approx(1.0))]]


# ----------------------------------------------------------------------------- model-facing


def test_check_compatible(tiny_model):
    check_compatible(make_encodings(np.ones((1, 8)), [0], ["a"], ["p"]), tiny_model)
    with pytest.raises(EncodingsError) as info:
        check_compatible(make_encodings(np.ones((1, 5)), [0], ["a"], ["p"]), tiny_model, "refs.npz")
    assert "refs.npz" in str(info.value) and "5" in str(info.value) and "8" in str(info.value)


def make_image_folder(root, counts):
    rng = np.random.default_rng(1)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            ok = cv2.imwrite(str(root / name / f"{i}.png"), rng.integers(0, 256, (20, 18), dtype=np.uint8))
            assert ok
    return str(root)


def test_enroll_folder(tmp_path, tiny_model):
    folder = make_image_folder(tmp_path / "refs", {"zebra": 3, "ant": 2, "öl": 1})
    result = enroll_folder(tiny_model, folder, metadata={"model": "tiny"})
    assert result.class_names == ["ant", "zebra", "öl"]
    assert result.embeddings.shape == (6, 8) and result.embeddings.dtype == np.float32
    assert result.labels.tolist() == [0, 0, 1, 1, 1, 2]
    assert [os.path.relpath(p, folder) for p in result.paths] == [
        os.path.join(*parts) for parts in
        [("ant", "0.png"), ("ant", "1.png"), ("zebra", "0.png"), ("zebra", "1.png"), ("zebra", "2.png"),
         ("öl", "0.png")]]
    images = np.stack([read_image(p, (16, 16), 1) for p in result.paths])
    expected = tiny_model.predict(images, verbose=0)
    np.testing.assert_allclose(result.embeddings, expected, rtol=1e-4, atol=1e-5)
    assert result.metadata["model"] == "tiny" and result.metadata["num_classes"] == 3

    capped = enroll_folder(tiny_model, folder, max_per_class=1)
    assert capped.class_names == ["ant", "zebra", "öl"]
    assert capped.labels.tolist() == [0, 1, 2]
    assert [os.path.basename(p) for p in capped.paths] == ["0.png"] * 3
    np.testing.assert_allclose(capped.embeddings, result.embeddings[[0, 2, 5]], rtol=1e-4, atol=1e-5)


def test_enroll_folder_skips_unreadable_file(tmp_path, tiny_model):
    folder = make_image_folder(tmp_path / "refs", {"ant": 2, "bee": 1})
    (tmp_path / "refs" / "ant" / "broken.png").write_text("not an image")
    with pytest.warns(UserWarning, match="unreadable"):
        result = enroll_folder(tiny_model, folder)
    assert result.class_names == ["ant", "bee"]
    assert result.embeddings.shape == (3, 8)
    assert not any("broken" in p for p in result.paths)


@pytest.mark.parametrize("override, message", [
    ({"centroids": np.zeros((7, 2), np.float32)}, "centroids"),
    ({"metadata": np.array("[1]")}, "metadata must be a JSON object"),
    ({"metadata": np.array("{not json")}, "metadata must be a JSON object"),
    ({"metadata": np.array('{"distance": "manhattan"}')}, "unknown distance"),
    ({"paths": np.array("abc")}, "string arrays"),
    ({"class_names": np.array("ab")}, "string arrays"),
    ({"embeddings": np.array([["a", "b", "c"]] * 3)}, "float"),
    ({"labels": np.array([0.0, 1.7, 1.0])}, "integer"),
])
def test_crafted_files_are_rejected_cleanly(tmp_path, override, message):
    from embedding_net.inference.encodings import make_encodings

    enc = make_encodings(np.eye(3), [0, 1, 1], ["a", "b"], ["x", "y", "z"])
    arrays = dict(embeddings=enc.embeddings, labels=enc.labels, class_names=np.array(enc.class_names),
                  paths=np.array(enc.paths), centroids=enc.centroids, metadata=np.array("{}"))
    arrays.update(override)
    path = tmp_path / "crafted.npz"
    np.savez(path, **arrays)
    with pytest.raises(EncodingsError, match=message):
        load_encodings(str(path))


def test_classify_never_lists_classes_without_references():
    from embedding_net.inference.encodings import classify, make_encodings

    enc = make_encodings(np.eye(3), [0, 2, 2], ["a", "b", "c"], list("xyz"))
    result = classify(np.eye(3)[:1], enc, top_k=5)[0]
    assert [name for name, _ in result] == ["a", "c"]


def test_encodings_are_sorted_by_class_and_classify_matches_the_unsorted_search():
    from embedding_net.evaluation.neighbours import class_distances
    from embedding_net.evaluation.distances import distance_matrix

    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(60, 8)).astype(np.float32)
    labels = rng.integers(0, 7, 60)
    paths = [f"img{i}.png" for i in range(60)]
    encodings = make_encodings(embeddings, labels, [f"c{i}" for i in range(7)], paths)
    assert np.all(np.diff(encodings.labels) >= 0)
    order = np.argsort(labels, kind="stable")
    assert encodings.paths == [paths[i] for i in order]  # paths follow their embeddings
    np.testing.assert_array_equal(encodings.embeddings, embeddings[order])
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    for distance in ("euclidean", "squared_euclidean", "cosine"):
        brute = np.stack([[distance_matrix(q[None], embeddings[labels == c], distance).min()
                           for c in range(7)] for q in queries])
        np.testing.assert_allclose(class_distances(queries, embeddings, labels, 7, distance), brute, rtol=1e-5)
        np.testing.assert_allclose(class_distances(queries, encodings.embeddings, encodings.labels, 7,
                                                   distance), brute, rtol=1e-5)
        best = [ranked[0][0] for ranked in classify(queries, encodings, top_k=1, distance=distance)]
        assert best == [f"c{c}" for c in brute.argmin(axis=1)]


def test_embed_images_batch_by_batch_equals_one_predict_call():
    from embedding_net.inference.encodings import embed_images
    from embedding_net.models.builders import build_embedding_model

    model = build_embedding_model("conv4", (28, 28, 1), 8)
    images = np.random.default_rng(0).integers(0, 256, (300, 28, 28, 1), dtype=np.uint8)
    embedded = embed_images(model, images, batch_size=128)  # 128 + 128 + a partial 44
    assert embedded.shape == (300, 8) and embedded.dtype == np.float32
    np.testing.assert_allclose(embedded, model.predict(images, batch_size=300, verbose=0), atol=1e-5)
    assert embed_images(model, images[:0]).shape == (0, 8)


def test_embed_images_takes_models_with_only_predict():
    """The LiteRT copy (and any duck-typed model) has `predict` but no `predict_on_batch`."""
    from embedding_net.inference.encodings import embed_images

    class PredictOnly:
        output_shape = (None, 2)

        def predict(self, images, batch_size, verbose=0):
            return np.stack([images.reshape(len(images), -1).mean(axis=1), np.zeros(len(images))], axis=1)

    images = np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2, 1)
    np.testing.assert_allclose(embed_images(PredictOnly(), images, batch_size=2)[:, 0], [1.5, 5.5, 9.5, 13.5, 17.5])
