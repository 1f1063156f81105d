"""Class answers from neighbours equal the project's rule computed on the full matrix."""

import numpy as np
import pytest

from embedding_net.index import UNKNOWN
from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.registry import list_backends
from embedding_net.index.classes import vote
from tests.index.conftest import brute_force, clustered, perturbed


def class_matrix(queries, vectors, labels, classes, distance="euclidean"):
    """[Q, C]: distance to each class's nearest image (inf for a class without images)."""
    matrix = brute_force(queries, vectors, distance)
    return np.stack([matrix[:, labels == c].min(axis=1) if np.any(labels == c)
                     else np.full(len(queries), np.inf) for c in range(classes)], axis=1)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_exact_nearest_classes_equal_full_matrix(distance):
    # Uneven classes: class 0 holds 300 images around every query, so 32 neighbours are not
    # enough to meet four classes: the search must grow.
    vectors, labels = clustered(n=600, dimension=8, classes=30, noise=0.8, seed=4)
    labels = np.where(np.arange(600) < 300, 0, labels)
    queries = perturbed(vectors, 40, scale=0.5)
    index = EmbeddingIndex.build(vectors, labels, [f"c{c}" for c in range(31)], distance=distance)
    got = index.nearest_classes(queries, top_k=4)
    matrix = class_matrix(queries, vectors, labels, 31, distance)
    for row, answer in zip(matrix, got):
        order = np.argsort(row, kind="stable")[:4]
        assert [name for name, _ in answer] == [f"c{c}" for c in order]
        np.testing.assert_allclose([d for _, d in answer], row[order], rtol=1e-4, atol=1e-4)
    capped = index.nearest_classes(queries, top_k=4, candidates=2, max_candidates=2)
    assert all(1 <= len(answer) <= 2 for answer in capped)


@pytest.mark.parametrize("backend", list_backends())
def test_classify_threshold_and_empty_classes(backend):
    vectors, labels = clustered(n=300, dimension=8, classes=10)
    index = EmbeddingIndex.build(vectors, labels, [f"c{c}" for c in range(12)], backend=backend)
    far = -vectors[:1] * 5  # far from everything
    rows = index.classify(np.concatenate([vectors[:1], far]), top_k=20, threshold=0.5)
    assert rows[0]["prediction"] == "c0" and rows[0]["distance"] == pytest.approx(0, abs=1e-3)
    assert rows[1]["prediction"] == UNKNOWN and rows[1]["distance"] > 0.5
    assert len(rows[0]["nearest"]) == 10  # c10 and c11 have no image: never listed
    assert index.classify(far, threshold=None)[0]["prediction"] != UNKNOWN


def test_vote_tie_rules():
    voters = np.array([[1, 2, 2, 1, 3], [4, 5, 5, 4, -1], [7, -1, -1, -1, -1], [-1] * 5])
    distances = np.array([[0.1, 0.2, 0.3, 0.9, 0.4],  # 1 and 2 tie on votes; 2 spends 0.5 < 1.0
                          [0.1, 0.2, 0.3, 0.4, np.inf],  # 4 and 5 tie on votes and spend 0.5
                          [0.1] + [np.inf] * 4, [np.inf] * 5])
    assert list(vote(voters, distances)) == [2, 4, 7, -1]


def test_knn_vote_equals_brute_force(gallery):
    vectors, labels, names = gallery
    queries = perturbed(vectors, 100, scale=0.6)
    index = EmbeddingIndex.build(vectors, labels, names)
    matrix = brute_force(queries, vectors, "euclidean")
    nearest = np.argsort(matrix, axis=1, kind="stable")[:, :7]
    want = vote(labels[nearest], np.take_along_axis(matrix, nearest, 1))
    assert index.knn_vote(queries, 7) == [names[c] for c in want]


@pytest.mark.parametrize("backend", list_backends())
def test_search_grows_past_a_crowded_class(backend):
    # 200 images of one class crowd every query: the first 32 neighbours meet one class only.
    rng = np.random.default_rng(5)
    queries = rng.standard_normal((5, 16)).astype(np.float32)
    crowd = np.repeat(queries, 40, axis=0) + rng.standard_normal((200, 16)).astype(np.float32) * 0.01
    others = rng.standard_normal((60, 16)).astype(np.float32) * 3
    vectors = np.concatenate([crowd, others])
    labels = np.concatenate([np.zeros(200, np.int64), 1 + np.arange(60) % 20])
    names = [f"c{c}" for c in range(21)]
    index = EmbeddingIndex.build(vectors, labels, names, backend=backend)
    matrix = class_matrix(queries, vectors, labels, 21)
    for row, answer in zip(matrix, index.nearest_classes(queries, top_k=3)):
        assert [name for name, _ in answer] == [f"c{c}" for c in np.argsort(row)[:3]]
