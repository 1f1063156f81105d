"""Nearest-neighbour evaluation: distances, per-class distances, top-k and one-shot accuracy."""

import json
import math
import os

import numpy as np
import pytest

from helpers import reference_class_distances, reference_distance
from embedding_net.evaluation.neighbours import class_distances, class_top_k_accuracy, nearest_classes
from embedding_net.evaluation.distances import distance_matrix
from embedding_net.evaluation.oneshot import evaluate_oneshot, oneshot_accuracy

DISTANCES = ("euclidean", "squared_euclidean", "cosine")


def assert_close_with_inf(actual, expected):
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isinf(actual), np.isinf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    references = rng.normal(size=(13, 4)).astype(np.float32)
    # Class 3 has no reference; class 4 has exactly one.
    labels = np.array([2, 0, 1, 0, 5, 2, 1, 4, 0, 5, 2, 1, 0])
    queries = rng.normal(size=(7, 4)).astype(np.float32)
    return queries, references, labels


# ----------------------------------------------------------------------------- distances


@pytest.mark.parametrize("distance", DISTANCES)
def test_distance_matrix_matches_loops(data, distance):
    queries, references, _ = data
    matrix = distance_matrix(queries, references, distance)
    assert matrix.shape == (7, 13) and matrix.dtype == np.float32
    expected = [[reference_distance(q, r, distance) for r in references] for q in queries]
    np.testing.assert_allclose(matrix, expected, rtol=1e-4, atol=1e-5)


def test_distance_matrix_hand_values():
    q = [[0.0, 0.0], [1.0, 0.0]]
    r = [[3.0, 4.0], [0.0, 2.0]]
    np.testing.assert_allclose(distance_matrix(q, r), [[5, 2], [math.sqrt(20), math.sqrt(5)]], rtol=1e-6)
    np.testing.assert_allclose(distance_matrix(q, r, "squared_euclidean"), [[25, 4], [20, 5]], rtol=1e-6)
    np.testing.assert_allclose(distance_matrix([[1.0, 0.0]], r, "cosine"), [[0.4, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="manhattan"):
        distance_matrix(q, r, "manhattan")


@pytest.mark.parametrize("distance", DISTANCES)
def test_class_distances_match_brute_force(data, distance):
    queries, references, labels = data
    actual = class_distances(queries, references, labels, 6, distance)
    expected = reference_class_distances(queries, references, labels, 6, distance)
    assert actual.dtype == np.float32
    assert np.isinf(actual[:, 3]).all()
    assert_close_with_inf(actual, expected)


@pytest.mark.parametrize("distance", ("euclidean", "cosine"))
def test_class_distances_leave_one_out(data, distance):
    _, references, labels = data
    query_indices = np.array([7, 0, 3, 12, 9, 4])  # 7 is class 4's only image
    queries = references[query_indices]
    actual = class_distances(queries, references, labels, 6, distance, query_indices=query_indices)
    expected = reference_class_distances(queries, references, labels, 6, distance, query_indices)
    assert_close_with_inf(actual, expected)
    assert np.isinf(actual[0, 4])  # its own image excluded, nothing left of class 4
    # Without leave-one-out, every query is at distance 0 from its own class.
    plain = class_distances(queries, references, labels, 6, distance)
    np.testing.assert_allclose(plain[np.arange(6), labels[query_indices]], 0.0, atol=1e-3)


@pytest.mark.parametrize("chunk_size", (1, 2, 5))
def test_class_distances_chunking_does_not_change_result(data, chunk_size):
    queries, references, labels = data
    # BLAS may round a 1-row product differently from a 7-row one: equal up to float32 rounding
    # (assert_allclose also requires the infinities at the same places).
    np.testing.assert_allclose(
        class_distances(queries, references, labels, 6, chunk_size=chunk_size),
        class_distances(queries, references, labels, 6), rtol=1e-5, atol=1e-6,
    )
    indices = np.arange(13)
    np.testing.assert_allclose(
        class_distances(references, references, labels, 6, query_indices=indices, chunk_size=chunk_size),
        class_distances(references, references, labels, 6, query_indices=indices), rtol=1e-5, atol=1e-6,
    )


# ----------------------------------------------------------------------------- ranking


def test_nearest_classes_ties_lower_id_first():
    d = np.array([[1.0, 0.5, 0.5, 1.0, np.inf, 0.5],
                  [np.inf, np.inf, 0.0, np.inf, 2.0, 2.0]], np.float32)
    assert nearest_classes(d, 6).tolist() == [[1, 2, 5, 0, 3, 4], [2, 4, 5, 0, 1, 3]]
    assert nearest_classes(d, 2).tolist() == [[1, 2], [2, 4]]


def test_top_k_accuracy_hand_case():
    d = np.array([[0.1, 0.2, 0.3, 0.4],   # true 1: rank 2
                  [0.5, 0.1, 0.9, 0.2],   # true 1: rank 1
                  [0.3, 0.2, 0.1, 0.0]])  # true 0: rank 4
    accuracy = class_top_k_accuracy(d, [1, 1, 0], ks=(1, 2, 3, 4))
    assert accuracy == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 1.0})
    assert class_top_k_accuracy(d, np.array([0, 1, 3]), ks=(1,)) == {1: 1.0}


def test_oneshot_accuracy_two_runs_one_wrong():
    embedding_of = {"a": [0.0], "b": [10.0], "q1": [1.0], "q2": [9.0],
                    "c": [0.0], "d": [4.0], "q3": [3.0], "q4": [-1.0]}
    runs = [
        {"support": ["a", "b"], "trials": [{"query": "q1", "answer": "a"}, {"query": "q2", "answer": "b"}]},
        # q3 is nearer d but its answer is c: the one wrong trial.
        {"support": ["c", "d"], "trials": [{"query": "q3", "answer": "c"}, {"query": "q4", "answer": "c"}]},
    ]
    accuracy, trials = oneshot_accuracy(runs, {k: np.array(v) for k, v in embedding_of.items()})
    assert trials == 4
    assert accuracy == pytest.approx(0.75)
    accuracy, trials = oneshot_accuracy(runs[1:], {k: np.array(v) for k, v in embedding_of.items()})
    assert (accuracy, trials) == (pytest.approx(0.5), 2)


# ----------------------------------------------------------------------------- retrieval


ALL_NAMES = ["ant", "bee", "cat", "dog", "eel"]


def clustered(names_order, per_class, rng, dim=8, spread=0.05):
    """Embeddings around one far-apart centre per class *name*, labelled in `names_order`."""
    centres = {name: np.eye(dim)[ALL_NAMES.index(name)] * 10 for name in names_order}
    embeddings, labels = [], []
    for label, name in enumerate(names_order):
        embeddings.append(centres[name] + rng.normal(scale=spread, size=(per_class, dim)))
        labels += [label] * per_class
    embeddings = np.concatenate(embeddings).astype(np.float32)
    order = rng.permutation(len(labels))
    return embeddings[order], np.array(labels)[order], list(names_order)


def _folder(names, labels):
    from embedding_net.data.folders import ImageFolder

    return ImageFolder("root", [f"{names[l]}/{i}.png" for i, l in enumerate(labels)], np.asarray(labels), names)


def test_training_evaluate_maps_val_names_onto_train_ids(tmp_path):
    from embedding_net.training import outputs as training_outputs
    from embedding_net.config.loading import load_config

    rng = np.random.default_rng(1)
    train = clustered(["ant", "bee", "cat", "dog"], 5, rng)
    val = clustered(["dog", "ant", "cat"], 3, rng)  # same names, different ids
    splits = {"train": (_folder(train[2], train[1]), None), "val": (_folder(val[2], val[1]), None)}
    config = load_config(None, [f"data.root={tmp_path}", "evaluation.episodes=0"])
    metrics, (labels, predicted, names) = training_outputs.evaluate(config, splits, {"train": train[0], "val": val[0]})
    assert metrics["protocol"] == "query_vs_reference" and metrics["queries"] == 9
    assert metrics["top1_accuracy"] == 1.0 and metrics["map_at_r"] == 1.0
    assert names == ["ant", "bee", "cat", "dog"]  # the train ids
    assert sorted(names[label] for label in labels) == ["ant"] * 3 + ["cat"] * 3 + ["dog"] * 3
    np.testing.assert_array_equal(predicted, labels)


def test_training_evaluate_is_leave_one_out_for_unseen_classes(tmp_path):
    from embedding_net.training import outputs as training_outputs
    from embedding_net.config.loading import load_config

    rng = np.random.default_rng(2)
    train = clustered(["ant", "bee"], 4, rng)
    val = clustered(["cat", "ant", "eel"], 4, rng)  # "cat" and "eel" are not in train
    splits = {"train": (_folder(train[2], train[1]), None), "val": (_folder(val[2], val[1]), None)}
    config = load_config(None, [f"data.root={tmp_path}", "evaluation.episodes=0"])
    metrics, _ = training_outputs.evaluate(config, splits, {"train": train[0], "val": val[0]})
    assert metrics["protocol"] == "leave_one_out" and metrics["queries"] == 12
    assert metrics["top1_accuracy"] == 1.0 and metrics["roc_auc"] == 1.0


def test_score_split_query_vs_reference_hand_case():
    from embedding_net.evaluation.scoring import score_split

    reference = (np.array([[0.0], [10.0], [20.0]]), np.array([0, 1, 2]))
    queries, labels = np.array([[9.0], [1.0], [12.0], [18.0]]), np.array([1, 0, 1, 0])
    metrics, predicted = score_split(queries, labels, reference, episodes=0, knn_k=1)
    assert metrics["top1_accuracy"] == pytest.approx(0.75)  # 18 is nearest c (20), not a (0)
    assert metrics["top5_accuracy"] == pytest.approx(1.0)
    assert metrics["knn1_accuracy"] == pytest.approx(0.75)
    assert predicted.tolist() == [1, 0, 1, 2]


def test_score_split_leave_one_out_hand_case():
    from embedding_net.evaluation.scoring import score_split

    # Class 0: 0, 1; class 1: 5, 2.4; class 2: a single image at 100.
    embeddings, labels = np.array([[0.0], [5.0], [1.0], [2.4], [100.0]]), np.array([0, 1, 0, 1, 2])
    metrics, _ = score_split(embeddings, labels, episodes=0)
    # 2.4 is nearer class 0 (1.4) than its class-mate (2.6); 100 has no class-mate at all, so
    # its class is never found, whatever k.
    assert metrics["top1_accuracy"] == pytest.approx(3 / 5)
    assert metrics["top5_accuracy"] == pytest.approx(4 / 5)
    assert metrics["queries"] == 5


def test_score_split_runs_episodes_when_enough_classes():
    from embedding_net.evaluation.scoring import score_split

    rng = np.random.default_rng(3)
    names = [f"c{i}" for i in range(25)]
    centres = np.eye(32)[:25] * 10
    embeddings = np.repeat(centres, 3, axis=0) + rng.normal(scale=0.01, size=(75, 32))
    metrics, _ = score_split(embeddings, np.repeat(np.arange(25), 3), episodes=50)
    assert metrics["episodes_20way_1shot"] == 1.0 and metrics["episodes_5way_1shot"] == 1.0
    assert metrics["episodes_20way_1shot_ci95"] == 0.0
    assert len(names) == 25


# ----------------------------------------------------------------------------- one-shot files


def test_evaluate_oneshot_without_runs_file_is_none(tmp_path):
    assert evaluate_oneshot(str(tmp_path), [str(tmp_path / "val" / "a" / "1.png")], np.zeros((1, 2))) is None


def test_evaluate_oneshot_from_runs_file(tmp_path):
    root = str(tmp_path)
    points = {"val/a/1.png": 0.0, "val/a/2.png": 1.0, "val/b/1.png": 10.0, "val/b/2.png": 6.0,
              "val/c/1.png": 20.0, "val/c/2.png": 14.0}
    paths = [os.path.join(root, *key.split("/")) for key in points]
    embeddings = np.array([[v, 0.0] for v in points.values()], np.float32)
    runs = [
        {"support": ["val/a/1.png", "val/b/1.png", "val/c/1.png"],
         "trials": [{"query": "val/a/2.png", "answer": "val/a/1.png"},   # right
                    {"query": "val/b/2.png", "answer": "val/b/1.png"},   # 6: nearer b (4) than a (6)
                    {"query": "val/c/2.png", "answer": "val/c/1.png"}]},  # 14: nearer b (4) -> wrong
        # References an image that is not among the val paths: skipped.
        {"support": ["val/a/1.png", "val/d/1.png"],
         "trials": [{"query": "val/a/2.png", "answer": "val/d/1.png"}]},
    ]
    with open(os.path.join(root, "oneshot_runs.json"), "w", encoding="utf-8") as handle:
        json.dump({"runs": runs}, handle)
    result = evaluate_oneshot(root, paths, embeddings)
    assert result == {"oneshot_accuracy": pytest.approx(2 / 3), "oneshot_trials": 3}
    # No run usable at all: None.
    assert evaluate_oneshot(root, paths[:2], embeddings[:2]) is None
