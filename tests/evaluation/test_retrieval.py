"""Retrieval and classification metrics against brute-force loops, hand examples and chunking."""

import math
import re

import numpy as np
import pytest

from embedding_net.evaluation import classification, distances, neighbours
from embedding_net.evaluation.classification import (
    confusion_matrix,
    nearest_centroid_accuracy,
    nearest_centroid_predict,
    per_class_accuracy,
)
from embedding_net.evaluation.retrieval import (
    knn_predict,
    knn_vote_accuracy,
    retrieval_metrics,
    top_k_accuracy,
)

DISTANCES = ("euclidean", "squared_euclidean", "cosine")


def brute_distance(a, b, distance):
    if distance == "cosine":
        return 1.0 - sum(x * y for x, y in zip(a, b)) / (math.hypot(*a) * math.hypot(*b))
    squared = sum((float(x) - float(y)) ** 2 for x, y in zip(a, b))
    return squared if distance == "squared_euclidean" else math.sqrt(squared)


def ranked(query, q, references, distance, loo):
    """Reference indices, nearest first, ties by index; the query itself left out in LOO."""
    candidates = [j for j in range(len(references)) if not (loo and j == q)]
    return sorted(candidates, key=lambda j: (brute_distance(query, references[j], distance), j))


def brute_retrieval(queries, labels, references, reference_labels, distance, loo):
    scores = []
    for q, (query, label) in enumerate(zip(queries, labels)):
        order = ranked(query, q, references, distance, loo)
        r = sum(reference_labels[j] == label for j in order)
        if r == 0:
            continue
        relevant = [reference_labels[j] == label for j in order[:r]]
        hits, average = 0, 0.0
        for i, rel in enumerate(relevant, start=1):
            hits += rel
            average += hits / i if rel else 0.0
        scores.append((relevant[0], sum(relevant) / r, average / r))
    return [float(np.mean([s[i] for s in scores])) for i in range(3)] + [len(scores)]


def brute_knn(queries, references, reference_labels, k, distance, loo):
    predictions = []
    for q, query in enumerate(queries):
        votes, spread, first = {}, {}, {}
        for rank, j in enumerate(ranked(query, q, references, distance, loo)[:k]):
            c = int(reference_labels[j])
            votes[c] = votes.get(c, 0) + 1
            spread[c] = spread.get(c, 0.0) + brute_distance(query, references[j], distance)
            first.setdefault(c, rank)
        predictions.append(min(votes, key=lambda c: (-votes[c], spread[c], first[c])))
    return np.array(predictions)


def brute_centroid(queries, references, reference_labels, distance, loo):
    predictions = []
    for q, query in enumerate(queries):
        best = None
        for c in sorted(set(reference_labels.tolist())):
            members = [j for j in range(len(references))
                       if reference_labels[j] == c and not (loo and j == q)]
            if not members:
                continue
            mean = np.mean([references[j].astype(np.float64) for j in members], axis=0)
            d = brute_distance(query, mean / np.linalg.norm(mean), distance)
            if best is None or d < best[0]:
                best = (d, c)
        predictions.append(best[1])
    return np.array(predictions)


def random_case(seed, n_queries=23, n_references=31, dim=5, integer=False):
    """Queries and references with single-image classes and a query class absent from the
    references; `integer` makes small-integer embeddings, full of duplicates and exact ties."""
    rng = np.random.default_rng(seed)
    draw = (lambda n: rng.integers(0, 3, (n, 3)).astype(np.float32)) if integer else (
        lambda n: rng.normal(size=(n, dim)).astype(np.float32))
    labels = rng.integers(0, 5, n_queries)
    labels[:3] = (10, 11, 12)  # three single-image classes in leave-one-out
    reference_labels = rng.integers(0, 5, n_references)
    reference_labels[:2] = (10, 11)  # class 12 has no reference
    return draw(n_queries), labels, draw(n_references), reference_labels


@pytest.mark.parametrize("integer, distances", [(False, DISTANCES),
                                                (True, ("euclidean", "squared_euclidean"))])
@pytest.mark.parametrize("loo", [True, False])
def test_retrieval_and_knn_match_brute_force(integer, distances, loo):
    for seed, distance in enumerate(distances):
        queries, labels, references, reference_labels = random_case(seed, integer=integer)
        if loo:
            references, reference_labels = queries, labels
        pair = (None, None) if loo else (references, reference_labels)
        expected = brute_retrieval(queries, labels, references, reference_labels, distance, loo)
        for chunk_size in (3, 1024):
            got = retrieval_metrics(queries, labels, *pair, distance=distance,
                                    chunk_size=chunk_size)
            assert [got["precision_at_1"], got["r_precision"], got["map_at_r"]] == pytest.approx(
                expected[:3], abs=1e-12)
            assert (got["queries"], got["skipped_queries"]) == (expected[3], 23 - expected[3])
            for k in (1, 4, 7):
                predicted = knn_predict(queries, references, reference_labels, k, distance,
                                        chunk_size, exclude_self=loo)
                brute = brute_knn(queries, references, reference_labels, k, distance, loo)
                np.testing.assert_array_equal(predicted, brute)
                assert knn_vote_accuracy(queries, labels, *pair, k=k, distance=distance,
                                         chunk_size=chunk_size) == np.mean(brute == labels)


@pytest.mark.parametrize("loo", [True, False])
@pytest.mark.parametrize("distance", DISTANCES)
def test_nearest_centroid_and_top_k_match_brute_force(loo, distance):
    queries, labels, references, reference_labels = random_case(7)
    if loo:
        references, reference_labels = queries, labels
    pair = (None, None) if loo else (references, reference_labels)
    brute = brute_centroid(queries, references, reference_labels, distance, loo)
    np.testing.assert_array_equal(
        nearest_centroid_predict(queries, references, reference_labels, distance, 3, loo), brute)
    assert nearest_centroid_accuracy(queries, labels, *pair, distance=distance) == np.mean(
        brute == labels)
    expected = {1: 0, 3: 0, 10: 0}  # 10 > the number of classes
    for q, query in enumerate(queries):
        nearest = {}
        for j in ranked(query, q, references, distance, loo):
            nearest.setdefault(int(reference_labels[j]), len(nearest))
        for k in expected:
            expected[k] += nearest.get(int(labels[q]), k) < k
    got = top_k_accuracy(queries, labels, *pair, ks=(1, 3, 10), distance=distance, chunk_size=4)
    assert got == pytest.approx({k: v / len(queries) for k, v in expected.items()})


def test_chunk_size_does_not_change_results():
    queries, labels, references, reference_labels = random_case(11, 70, 90)
    for pair in ((None, None), (references, reference_labels)):
        for function, kwargs in ((retrieval_metrics, {}), (knn_vote_accuracy, {"k": 5}),
                                 (nearest_centroid_accuracy, {}), (top_k_accuracy, {})):
            assert function(queries, labels, *pair, chunk_size=3, **kwargs) == function(
                queries, labels, *pair, **kwargs)


def test_map_at_r_hand_example():
    """1-D references at 1..5 labelled 0 1 0 0 1 (indices 0..4, at distance x from 0).

    Query at 0, label 0: R = 3 (refs 1, 3, 4). Its 3 nearest are 1 (rel), 2 (not), 3 (rel):
    P(1) = 1, P(3) = 2/3, so AP@R = (1 + 2/3) / 3 = 5/9, R-precision 2/3, precision@1 1.
    Query at 10, label 1: R = 2 (refs 2, 5). Its 2 nearest are 5 (rel), 4 (not):
    AP@R = 1/2, R-precision 1/2, precision@1 1.
    Query at 7, label 2: no reference of class 2, R = 0: skipped.
    Means: precision@1 = 1, R-precision = (2/3 + 1/2) / 2 = 7/12, MAP@R = (5/9 + 1/2) / 2 = 19/36.
    """
    references = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    got = retrieval_metrics([[0.0], [10.0], [7.0]], np.array([0, 1, 2]), references,
                            np.array([0, 1, 0, 0, 1]))
    assert got == pytest.approx({"precision_at_1": 1.0, "r_precision": 7 / 12,
                                 "map_at_r": 19 / 36, "queries": 2, "skipped_queries": 1})


def test_ties_go_to_the_lower_reference_index():
    # Both references are at distance 1 from the query; index 0 (the wrong class) ranks first.
    got = retrieval_metrics([[0.0]], np.array([0]), [[-1.0], [1.0]], np.array([1, 0]))
    assert got["precision_at_1"] == 0.0 and got["map_at_r"] == 0.0
    got = retrieval_metrics([[0.0]], np.array([0]), [[1.0], [-1.0]], np.array([0, 1]))
    assert got["precision_at_1"] == 1.0 and got["map_at_r"] == 1.0


@pytest.mark.parametrize("positions, expected", [((1, 2, 3, 4), 1), ((1, 2, 3, 10), 2)])
def test_knn_vote_ties(positions, expected):
    # Two votes each: equal summed distances (1 + 4 = 2 + 3) go to the nearest neighbour's
    # class 1; otherwise (1 + 10 > 2 + 3) to the class with the smaller sum, 2.
    references = np.array(positions, np.float32)[:, None]
    assert knn_predict([[0.0]], references, np.array([1, 2, 2, 1]), k=4)[0] == expected


def test_lone_queries_are_skipped():
    got = retrieval_metrics(np.eye(3), np.array([0, 1, 2]))
    assert math.isnan(got["map_at_r"]) and (got["queries"], got["skipped_queries"]) == (0, 3)


def test_work_is_chunked(monkeypatch):
    shapes = []
    original = distances.distance_matrix

    def recording(queries, references, distance="euclidean"):
        shapes.append(len(queries))
        return original(queries, references, distance)

    for module in (neighbours, classification):  # every caller of distance_matrix
        monkeypatch.setattr(module, "distance_matrix", recording)
    queries, labels, _, _ = random_case(3, n_queries=40)
    retrieval_metrics(queries, labels, chunk_size=6)
    knn_vote_accuracy(queries, labels, k=3, chunk_size=6)
    nearest_centroid_accuracy(queries, labels, chunk_size=6)
    assert shapes and max(shapes) <= 6


def test_per_class_accuracy_and_confusion_matrix():
    rng = np.random.default_rng(0)
    true, predicted = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    true[true == 3] = 2  # class 3 has no query: NaN
    accuracy = per_class_accuracy(true, predicted, 5)
    matrix = confusion_matrix(true, predicted, 5)
    for c in range(5):
        rows = [p for t, p in zip(true, predicted) if t == c]
        if rows:
            assert accuracy[c] == sum(p == c for p in rows) / len(rows)
        else:
            assert math.isnan(accuracy[c])
        for p in range(5):
            assert matrix[c, p] == sum(1 for a, b in zip(true, predicted) if (a, b) == (c, p))


@pytest.mark.parametrize("call, message", [
    (lambda: retrieval_metrics(np.eye(3), np.arange(3), chunk_size=0),
     "`chunk_size` must be an integer >= 1. Received: 0"),
    (lambda: knn_vote_accuracy(np.eye(3), np.arange(3), k=3),
     "`k` must be <= the 2 references available. Received: 3"),
    (lambda: knn_predict(np.eye(3), np.eye(3), np.arange(3), k=0), "Received: 0"),
    (lambda: retrieval_metrics(np.eye(3), np.arange(3), np.eye(3)), "Received: ndarray and None"),
    (lambda: retrieval_metrics(np.eye(3), np.arange(2)), "Received: int64 (2,)"),
    (lambda: retrieval_metrics(np.eye(3), np.arange(3), np.ones((2, 4)), np.arange(2)),
     "Received: 3 and 4"),
    (lambda: per_class_accuracy([0, 5], [0, 1], 3), "[0, 3). Received: int64 in [0, 5]"),
    (lambda: retrieval_metrics(np.eye(3), np.arange(3), distance="l1"), "Received: 'l1'"),
])
def test_errors_echo_the_values(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
