"""Galleries: .npz and .enidx files answer alike; metadata travels in the index manifest; exact
copies of approximate indexes; metrics of a folder through the index."""

import numpy as np
import pytest
from fakes import FakeModel, make_folder

from embedding_net.index import IndexBackendError, load_index
from embedding_net.inference.encodings import classify, enroll_folder, make_encodings, save_encodings
from embedding_net.inference.gallery import EXACT_UP_TO, choose_backend, open_gallery, save_encodings_index
from embedding_net.inference.gallery_metrics import evaluate_folder_via_index
from embedding_net.inference.prediction import collect_image_paths, evaluate_folder, predict_paths


def clustered_encodings(n=600, classes=40, dimension=16, seed=0, distance="euclidean"):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dimension))
    labels = np.arange(n) % classes
    vectors = centres[labels] + 0.4 * rng.standard_normal((n, dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return make_encodings(vectors, labels, [f"c{c:02d}" for c in range(classes)],
                          [f"img{i}.png" for i in range(n)], {"distance": distance, "threshold": 0.7})


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "squared_euclidean"])
def test_npz_and_index_galleries_give_todays_answers(tmp_path, distance):
    encodings = clustered_encodings(distance=distance)
    save_encodings(str(tmp_path / "g.npz"), encodings)
    save_encodings_index(str(tmp_path / "g.enidx"), encodings, model_sha256="ab" * 32)
    queries = np.random.default_rng(1).standard_normal((50, 16)).astype(np.float32)
    today = classify(queries, encodings, top_k=5, distance=distance)
    for path in ("g.npz", "g.enidx"):
        gallery = open_gallery(str(tmp_path / path))
        assert gallery.metadata["threshold"] == 0.7 and gallery.distance == distance
        for got, want in zip(gallery.nearest_classes(queries, 5), today):
            assert [c for c, _ in got] == [c for c, _ in want]
            np.testing.assert_allclose([d for _, d in got], [d for _, d in want], rtol=1e-4, atol=1e-5)
    loaded = load_index(str(tmp_path / "g.enidx"))
    assert loaded.model_sha256 == "ab" * 32 and loaded.metadata["distance"] == distance


def test_exact_copy_of_an_approximate_index_answers_exactly(tmp_path):
    encodings = clustered_encodings(n=2000, classes=100)
    save_encodings_index(str(tmp_path / "h.enidx"), encodings, backend="hnsw")
    save_encodings_index(str(tmp_path / "e.enidx"), encodings)
    approximate, exact = open_gallery(str(tmp_path / "h.enidx")), open_gallery(str(tmp_path / "e.enidx"))
    forced = open_gallery(str(tmp_path / "h.enidx"), exact=True)
    assert approximate.approximate and not forced.approximate and exact.index.backend == "exact"
    queries = np.random.default_rng(2).standard_normal((40, 16)).astype(np.float32)
    assert forced.nearest_classes(queries, 5) == exact.nearest_classes(queries, 5)
    assert forced.metadata == exact.metadata


def test_choose_backend_by_size_and_name():
    assert choose_backend(EXACT_UP_TO - 1) == "exact" and choose_backend(EXACT_UP_TO) == "hnsw"
    assert choose_backend(10, "usearch") == "usearch"
    with pytest.raises(IndexBackendError, match="unknown index backend 'nope'"):
        choose_backend(10, "nope")


def test_predict_paths_answers_alike_from_encodings_and_index(tmp_path):
    model, folder = FakeModel(), make_folder(tmp_path / "folder")
    encodings = enroll_folder(model, folder, metadata={"distance": "euclidean"})
    save_encodings_index(str(tmp_path / "g.enidx"), encodings)
    paths = collect_image_paths([folder])
    old = predict_paths(model, encodings, paths, top_k=2, threshold=0.5)
    new = predict_paths(model, open_gallery(str(tmp_path / "g.enidx"), model=model), paths, 2, 0.5)
    assert [r["prediction"] for r in old] == [r["prediction"] for r in new]
    assert [r["path"] for r in new] == paths
    np.testing.assert_allclose([r["distance"] for r in old], [r["distance"] for r in new], atol=1e-5)


@pytest.mark.parametrize("backend", ["exact", "hnsw"])
def test_folder_metrics_through_the_index_match_the_npz_ones(tmp_path, backend):
    model = FakeModel()
    gallery_folder = make_folder(tmp_path / "gallery", classes=6, per_class=8)
    query_folder = make_folder(tmp_path / "queries", classes=7, per_class=3, seed=1)  # class_6 unknown
    encodings = enroll_folder(model, gallery_folder, metadata={"distance": "euclidean"})
    save_encodings_index(str(tmp_path / "g.enidx"), encodings, backend=backend)
    want = evaluate_folder(model, encodings, query_folder)
    got = evaluate_folder_via_index(model, open_gallery(str(tmp_path / "g.enidx")), query_folder)
    for key in ("queries", "top1_accuracy", "top5_accuracy", "precision_at_1", "r_precision", "map_at_r",
                "knn5_accuracy", "images_of_unknown_classes"):
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert got["backend"] == backend and got["gallery_images"] == 48
    if backend == "hnsw":
        assert got["recall_queries"] == 18 and got["recall_at_1"] == 1.0 and got["recall_at_10"] == 1.0
    else:
        assert "recall_at_1" not in got
