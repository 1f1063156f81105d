"""Pair verification: ROC AUC, EER and threshold against brute force and hand cases; pairs."""

import itertools
import re

import numpy as np
import pytest

from embedding_net.evaluation.distances import distance_matrix
from embedding_net.evaluation.verification import pair_distances, sample_pairs, verification_metrics


def brute_verification(distances, same):
    positives = [d for d, s in zip(distances, same) if s]
    negatives = [d for d, s in zip(distances, same) if not s]
    # AUC: the chance a random positive is nearer than a random negative, ties count 1/2.
    auc = np.mean([1.0 if p < n else 0.5 if p == n else 0.0
                   for p in positives for n in negatives])
    # ROC points, accepting distance <= t for t at -inf and at every distinct distance.
    points = [(0.0, 1.0)]
    for t in sorted(set(distances)):
        points.append((sum(n <= t for n in negatives) / len(negatives),
                       sum(p > t for p in positives) / len(positives)))
    for (fa0, fr0), (fa1, fr1) in zip(points, points[1:]):
        if fa1 - fr1 >= 0:
            w = (fa0 - fr0) / ((fa0 - fr0) - (fa1 - fr1))
            eer = fa0 + w * (fa1 - fa0)
            break
    values = sorted(set(distances))
    thresholds = ([np.nextafter(values[0], -np.inf)]
                  + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1]])
    accuracy = [np.mean([(d <= t) == s for d, s in zip(distances, same)]) for t in thresholds]
    best = int(np.argmax(accuracy))  # the first, i.e. smallest, on a tie
    return {"roc_auc": auc, "eer": eer, "threshold": thresholds[best], "accuracy": accuracy[best]}


def test_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        same = rng.random(40) < 0.4
        distances = np.round(rng.random(40) + 0.3 * ~same, 1)  # many ties
        got = verification_metrics(distances, same)
        assert got == pytest.approx(brute_verification(distances.tolist(), same.tolist()))


def test_separable_distances():
    got = verification_metrics([0.1, 0.5, 0.2, 0.9, 0.3], [True, False, True, False, True])
    assert got == pytest.approx({"roc_auc": 1.0, "eer": 0.0, "threshold": 0.4, "accuracy": 1.0})


def test_hand_computed_eer():
    """Same-class at 1, 2, 4 and different-class at 3, 5.

    Accepting d <= 2 gives (false accept, false reject) = (0, 1/3); d <= 3 gives (1/2, 1/3):
    the sign of FAR - FRR changes on this segment, where FRR stays 1/3, so EER = 1/3. The
    best cut accepts d <= 2 or d <= 4 (4 of 5 right); the smaller wins: threshold 2.5.
    """
    got = verification_metrics([1.0, 2.0, 3.0, 4.0, 5.0], [True, True, False, True, False])
    assert got == pytest.approx({"roc_auc": 5 / 6, "eer": 1 / 3, "threshold": 2.5,
                                 "accuracy": 0.8})


def test_verification_errors_echo_the_values():
    with pytest.raises(ValueError, match=re.escape("Received: 2 of 2 same-class")):
        verification_metrics([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match=re.escape("Received: float64 (2,) and int64 (2,)")):
        verification_metrics([0.1, 0.2], [1, 0])


@pytest.mark.parametrize("labels, max_pairs, n", [
    (np.random.default_rng(0).integers(0, 6, 60), 50, 25),
    ([3, 3, 3, 3, 3, 7], 100, 5),  # 10 same-class pairs but only 5 different-class ones
    ([0, 1, 0, 2, 3], 100, 1),  # a single same-class pair
])
def test_sample_pairs_is_balanced_valid_and_seeded(labels, max_pairs, n):
    labels = np.asarray(labels)
    pairs = sample_pairs(labels, max_pairs, seed=3)
    assert pairs.shape == (2 * n, 2) and pairs.dtype == np.int64
    assert (pairs[:, 0] < pairs[:, 1]).all() and pairs.min() >= 0 and pairs.max() < len(labels)
    assert len({tuple(p) for p in pairs.tolist()}) == 2 * n
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    assert same[:n].all() and not same[n:].any()
    np.testing.assert_array_equal(pairs, sample_pairs(labels, max_pairs, seed=3))
    everything = {(i, j) for i, j in itertools.combinations(range(len(labels)), 2)}
    for kind, half in ((True, pairs[:n]), (False, pairs[n:])):
        possible = {(i, j) for i, j in everything if (labels[i] == labels[j]) == kind}
        if len(possible) == n:  # the scarce kind is taken whole
            assert {tuple(p) for p in half.tolist()} == possible


def test_sample_pairs_covers_every_pair_and_differs_by_seed():
    labels = np.random.default_rng(1).integers(0, 4, 12)
    seen = set()
    for seed in range(200):
        seen |= {tuple(p) for p in sample_pairs(labels, 6, seed).tolist()}
    assert seen == set(itertools.combinations(range(12), 2))
    assert not np.array_equal(sample_pairs(labels, 6, 0), sample_pairs(labels, 6, 1))


def test_sample_pairs_errors_echo_the_values():
    with pytest.raises(ValueError, match=re.escape("Received: 0 and 6 of them")):
        sample_pairs([0, 1, 2, 3], 10)
    with pytest.raises(ValueError, match=re.escape("`max_pairs` must be >= 2. Received: 1")):
        sample_pairs([0, 0, 1], 1)


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine"])
def test_pair_distances_match_distance_matrix(distance):
    embeddings = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
    pairs = np.array([[0, 1], [2, 8], [3, 3], [7, 4]])
    full = distance_matrix(embeddings, embeddings, distance)
    got = pair_distances(embeddings, pairs, distance, chunk_size=3)
    np.testing.assert_allclose(got, full[pairs[:, 0], pairs[:, 1]], atol=2e-6)
    with pytest.raises(ValueError, match=re.escape("in [0, 9). Received: int64 (1, 2)")):
        pair_distances(embeddings, np.array([[0, 9]]), distance)
