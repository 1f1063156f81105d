"""Few-shot episodes: the seeded draw protocol, nearest-prototype accuracy and its interval."""

import math
import re

import numpy as np
import pytest

from embedding_net.evaluation.episodes import episode_accuracy, sample_episodes


def labelled_set(seed=0, classes=16, dim=6):
    """Classes of 1 to 8 images (so some are too small for an episode) and random embeddings."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), rng.integers(1, 9, classes))
    rng.shuffle(labels)
    return rng.normal(size=(len(labels), dim)).astype(np.float32), labels


def literal_draws(labels, n_way, k_shot, episodes, queries_per_class, seed):
    """The protocol as written, with a Python loop per class."""
    rng = np.random.default_rng(seed)
    per_class = k_shot + queries_per_class
    eligible = [c for c in sorted(set(labels.tolist())) if list(labels).count(c) >= per_class]
    for _ in range(episodes):
        drawn = rng.choice(np.array(eligible), n_way, replace=False)
        picks = [rng.choice(np.array([i for i, y in enumerate(labels) if y == c]), per_class,
                            replace=False) for c in drawn]
        yield [list(p[:k_shot]) for p in picks], [list(p[k_shot:]) for p in picks], list(drawn)


def brute_accuracies(embeddings, labels, n_way, k_shot, episodes, queries_per_class, seed):
    accuracies = []
    for support, queries, drawn in literal_draws(labels, n_way, k_shot, episodes,
                                                 queries_per_class, seed):
        prototypes = [np.mean([embeddings[i].astype(np.float64) for i in s], axis=0)
                      for s in support]
        correct = total = 0
        for c, members in enumerate(queries):
            for i in members:
                d = [math.dist(embeddings[i], p) for p in prototypes]
                assert labels[i] == drawn[c]
                correct += int(np.argmin(d) == c)
                total += 1
        accuracies.append(correct / total)
    return np.array(accuracies)


@pytest.mark.parametrize("n_way, k_shot, queries_per_class", [(3, 1, 1), (4, 3, 2), (2, 2, 3)])
def test_episodes_follow_the_protocol_and_match_brute_force(n_way, k_shot, queries_per_class):
    embeddings, labels = labelled_set()
    draws = list(sample_episodes(labels, n_way, k_shot, 30, queries_per_class, seed=5))
    literal = list(literal_draws(labels, n_way, k_shot, 30, queries_per_class, seed=5))
    for (support, queries), (support_l, queries_l, drawn) in zip(draws, literal):
        assert support.shape == (n_way, k_shot) and queries.shape == (n_way, queries_per_class)
        assert support.tolist() == support_l and queries.tolist() == queries_l
        assert (labels[support] == np.array(drawn)[:, None]).all()
        assert len(set(support.ravel()) | set(queries.ravel())) == support.size + queries.size
    brute = brute_accuracies(embeddings, labels, n_way, k_shot, 30, queries_per_class, seed=5)
    got = episode_accuracy(embeddings, labels, n_way, k_shot, 30, queries_per_class, seed=5)
    assert got["mean"] == pytest.approx(brute.mean())
    assert got["ci95"] == pytest.approx(1.96 * np.std(brute) / math.sqrt(30))
    assert {k: got[k] for k in ("episodes", "n_way", "k_shot", "queries_per_class")} == {
        "episodes": 30, "n_way": n_way, "k_shot": k_shot, "queries_per_class": queries_per_class}


def test_episodes_depend_on_the_seed_not_the_embeddings():
    embeddings, labels = labelled_set()
    first = [s.tolist() + q.tolist() for s, q in sample_episodes(labels, 3, 2, 20, 1, seed=1)]
    again = [s.tolist() + q.tolist() for s, q in sample_episodes(labels, 3, 2, 20, 1, seed=1)]
    other = [s.tolist() + q.tolist() for s, q in sample_episodes(labels, 3, 2, 20, 1, seed=2)]
    assert first == again and first != other
    a = episode_accuracy(embeddings, labels, 3, 2, 20, seed=1)
    assert a == episode_accuracy(embeddings, labels, 3, 2, 20, seed=1)
    # Other embeddings are scored on the very same episodes (brute force redraws from labels).
    others = np.random.default_rng(9).normal(size=embeddings.shape).astype(np.float32)
    brute = brute_accuracies(others, labels, 3, 2, 20, 1, seed=1)
    assert episode_accuracy(others, labels, 3, 2, 20, seed=1)["mean"] == pytest.approx(
        brute.mean())


def test_separable_embeddings_score_one():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4)
    embeddings = np.eye(10)[labels] + rng.normal(scale=0.05, size=(40, 10))
    for distance in ("euclidean", "squared_euclidean", "cosine"):
        got = episode_accuracy(embeddings, labels, n_way=5, k_shot=1, episodes=50,
                               queries_per_class=3, distance=distance)
        assert got["mean"] == 1.0 and got["ci95"] == 0.0


def test_random_embeddings_score_about_one_over_n_way():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(30), 5)
    embeddings = rng.normal(size=(150, 8))
    got = episode_accuracy(embeddings, labels, n_way=5, k_shot=1, episodes=2000)
    assert abs(got["mean"] - 0.2) < 0.04
    assert 0.0 < got["ci95"] < 0.04


def test_too_many_ways_is_an_error():
    embeddings, labels = labelled_set()
    eligible = int(np.sum(np.bincount(labels) >= 3))
    message = (f"`n_way` must be <= the {eligible} classes with at least k_shot + "
               f"queries_per_class = 3 images. Received: n_way=20, k_shot=2, queries_per_class=1")
    with pytest.raises(ValueError, match=re.escape(message)):
        episode_accuracy(embeddings, labels, n_way=20, k_shot=2)
    with pytest.raises(ValueError, match=re.escape("`episodes` must be an integer >= 1. "
                                                   "Received: 0")):
        sample_episodes(labels, 2, episodes=0)
