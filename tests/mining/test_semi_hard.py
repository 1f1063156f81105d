"""The three ways of `semi_hard_columns` (comparison, one slot at a time, sorting) against the
brute-force rule, and the semi-hard loss's gradient the same whichever way chose."""

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from embedding_net.losses.triplet import triplet_loss
from embedding_net.mining import rules, semi_hard
from embedding_net.mining.distances import pairwise_distances

WAYS = ("_columns_by_comparison", "_columns_by_slots", "_columns_by_sorting")


def loop_choice(distances, labels, a, threshold):
    """FaceNet's negative distance for anchor a and threshold d(a, p): None without negatives."""
    negatives = [float(distances[a, n]) for n in range(len(labels)) if labels[n] != labels[a]]
    if not negatives:
        return None
    farther = [d for d in negatives if d > threshold]
    return min(farther) if farther else max(negatives)


def batch(seed, tied, size=14):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(5), [4, 4, 3, 2, 1])[:size]).astype("int32")
    if tied:  # small integers: many d(a, n) equal to d(a, p)
        upper = np.triu(rng.integers(1, 4, size=(size, size)), 1)
        return labels, (upper + upper.T).astype("float32")
    return labels, np.asarray(pairwise_distances(rng.normal(size=(size, 5)).astype("float32")))


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("tied", [False, True], ids=["random", "ties"])
def test_each_way_picks_the_rule_s_negative(way, tied):
    checked = 0
    for seed in range(4):
        labels, distances = batch(seed, tied)
        positives = rules.positive_mask(labels)
        columns, in_use = rules.positive_slots(positives, rules.positive_slot_count(positives))
        thresholds = rules.take_per_row(ops.convert_to_tensor(distances), columns)
        chosen = np.asarray(getattr(semi_hard, way)(ops.convert_to_tensor(distances), rules.negative_mask(labels),
                                                    thresholds))
        thresholds, in_use = np.asarray(thresholds), np.asarray(in_use)
        for a in range(len(labels)):
            for m in np.flatnonzero(in_use[a]):
                want = loop_choice(distances, labels, a, float(thresholds[a, m]))
                if want is None:
                    continue
                assert labels[chosen[a, m]] != labels[a], (seed, a, m)
                assert distances[a, chosen[a, m]] == np.float32(want), (seed, a, m)
                checked += 1
    assert checked > 60


@pytest.mark.parametrize("way", WAYS)
def test_each_way_with_huge_distances_and_without_negatives(way):
    """Distances of 2^25 (squared euclidean on large raw embeddings), where the largest distance
    + 1 rounds back to the largest, and an anchor whose batch holds no negative."""
    labels = np.array([0, 0, 1, 2], dtype="int32")
    distances = np.array([[0, 1, 3, 2 ** 25], [1, 0, 4, 6], [3, 4, 0, 7], [2 ** 25, 6, 7, 0]], dtype="float32")
    thresholds = ops.convert_to_tensor(np.array([[5.0], [1.0], [0.0], [0.0]], dtype="float32"))
    chosen = np.asarray(getattr(semi_hard, way)(ops.convert_to_tensor(distances), rules.negative_mask(labels),
                                                thresholds))
    assert chosen[0, 0] == 3  # the only negative farther than 5, at 2^25
    assert chosen[1, 0] == 2  # nearest farther than 1: d = 4
    lonely = np.zeros(3, dtype="int32")  # one class: no negative at all
    columns = np.asarray(getattr(semi_hard, way)(ops.convert_to_tensor(distances[:3, :3]),
                                                 rules.negative_mask(lonely), thresholds[:3]))
    assert columns.shape == (3, 1) and np.all((columns >= 0) & (columns < 3))


@pytest.mark.parametrize("limits, way", [((2 ** 26, 32), "_columns_by_comparison"), ((1, 32), "_columns_by_slots"),
                                         ((1, 1), "_columns_by_sorting")])
def test_the_batch_s_shape_picks_the_way(limits, way, monkeypatch):
    """Small batches compare at once; larger ones with up to 32 positives per anchor go slot by
    slot (B = 8,192 in a P x K batch); more positives per anchor sort."""
    monkeypatch.setattr(rules, "MAX_COMPARISON_VALUES", limits[0])
    monkeypatch.setattr(rules, "MAX_SLOT_PASSES", limits[1])
    calls = []
    for name in WAYS:
        original = getattr(semi_hard, name)
        monkeypatch.setattr(semi_hard, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    labels, distances = batch(0, False)
    semi_hard.semi_hard_columns(ops.convert_to_tensor(distances), rules.negative_mask(labels),
                                ops.convert_to_tensor(distances[:, :3]))
    assert calls == [way]


def test_the_loss_gradient_is_the_same_whichever_way_chose(monkeypatch):
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(6), 4).astype("int32")
    x = tf.Variable(rng.normal(size=(24, 8)).astype("float32"))

    def value_and_gradient():
        with tf.GradientTape() as tape:
            value = triplet_loss(labels, x, 0.3, "semi_hard")
        return float(value), tape.gradient(value, x).numpy()

    compared = value_and_gradient()
    monkeypatch.setattr(rules, "MAX_COMPARISON_VALUES", 1)  # as if B were thousands
    by_slots = value_and_gradient()
    monkeypatch.setattr(rules, "MAX_SLOT_PASSES", 1)  # as if K were large
    by_sorting = value_and_gradient()
    assert compared[0] > 0 and np.any(compared[1])
    for other in (by_slots, by_sorting):
        assert other[0] == pytest.approx(compared[0], rel=1e-6)
        np.testing.assert_allclose(other[1], compared[1], rtol=1e-5, atol=1e-7)
