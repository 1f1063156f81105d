"""Retrieval metrics through an index against plain NumPy loops, and recall against exact."""

import numpy as np
import pytest

from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.registry import list_backends
from embedding_net.index.metrics import recall_against_exact, recall_at, retrieval_metrics_via_index
from tests.index.conftest import brute_force, clustered, perturbed


def loop_metrics(vectors, labels, distance, knn_k):
    """Musgrave et al. 2020 P@1, R-precision, MAP@R and LOO k-NN accuracy, one query at a time."""
    matrix = brute_force(vectors, vectors, distance)
    p1, rp, mapr, knn = [], [], [], []
    for q in range(len(vectors)):
        others = [i for i in np.argsort(matrix[q], kind="stable") if i != q]
        r = int(np.sum(labels == labels[q])) - 1
        votes = {}
        for i in others[:knn_k]:
            count, spent = votes.get(labels[i], (0, 0.0))
            votes[labels[i]] = (count - 1, spent + matrix[q, i])
        nearest_first = [labels[i] for i in others[:knn_k]]
        knn.append(min(votes, key=lambda c: (*votes[c], nearest_first.index(c))) == labels[q])
        if r == 0:
            continue
        relevant = [labels[i] == labels[q] for i in others[:r]]
        p1.append(relevant[0])
        rp.append(sum(relevant) / r)
        mapr.append(sum(sum(relevant[: i + 1]) / (i + 1) for i in range(r) if relevant[i]) / r)
    return np.mean(p1), np.mean(rp), np.mean(mapr), np.mean(knn), len(p1)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_metrics_equal_numpy_loop(distance):
    vectors, labels = clustered(n=240, dimension=8, classes=30, noise=0.7, seed=3)
    labels = np.where(np.arange(240) < 5, 100 + np.arange(240), labels)  # five lone queries
    p1, rp, mapr, knn, evaluated = loop_metrics(vectors, labels, distance, 5)
    for max_entries in (1 << 22, 50):  # one chunk; many small chunks
        got = retrieval_metrics_via_index(vectors, labels, knn_k=5, distance=distance,
                                          max_entries=max_entries)
        assert got["queries"] == evaluated and got["skipped_queries"] == 5
        np.testing.assert_allclose([got["precision_at_1"], got["r_precision"], got["map_at_r"],
                                    got["knn_accuracy"]], [p1, rp, mapr, knn], atol=1e-12)
    assert 0.2 < mapr < 0.9  # the data is neither trivial nor hopeless


@pytest.mark.parametrize("backend", list_backends())
def test_metrics_through_each_backend_close_to_exact(backend, gallery):
    vectors, labels, names = gallery
    exact = retrieval_metrics_via_index(vectors, labels)
    index = EmbeddingIndex.build(vectors, labels, names, backend=backend)
    got = retrieval_metrics_via_index(index)
    assert got["backend"] == backend and got["queries"] == len(vectors)
    for key in ("precision_at_1", "r_precision", "map_at_r", "knn_accuracy"):
        assert abs(got[key] - exact[key]) < 0.01, (key, got[key], exact[key])


def test_metrics_skip_removed_images(gallery):
    vectors, labels, names = gallery
    index = EmbeddingIndex.build(vectors, labels, names, backend="hnsw")
    index.remove_class(names[0])
    got = retrieval_metrics_via_index(index)
    assert got["queries"] == len(vectors) - 30


def test_recall():
    assert recall_at([[1, 2, 3], [4, 5, 6]], [[1, 3, 9], [7, 8, 4]], ks=(1, 3)) == {
        "recall_at_1": 0.5, "recall_at_3": 0.5}
    vectors, labels = clustered(n=500, dimension=16, classes=25)
    exact = EmbeddingIndex.build(vectors, labels, [str(i) for i in range(25)])
    queries = perturbed(vectors, 50)
    assert recall_against_exact(exact, exact, queries) == {"recall_at_1": 1.0, "recall_at_10": 1.0}
    shuffled = EmbeddingIndex.build(vectors[::-1], labels[::-1], [str(i) for i in range(25)])
    assert recall_against_exact(shuffled, exact, queries)["recall_at_10"] < 0.2
    with pytest.raises(ValueError, match="different images"):
        recall_against_exact(EmbeddingIndex.build(vectors[:10], labels[:10], ["x"] * 0 + [
            str(i) for i in range(25)]), exact, queries)
