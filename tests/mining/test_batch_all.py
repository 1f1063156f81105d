"""Batch-all sums against loops over every triplet in float64, and their gradients against
automatic differentiation of the B^3 form, on both paths: [B, M, B] comparisons (at most 8
positives per anchor) and, beyond that, sorted negatives and anchor blocks for the soft margin."""

import math

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from embedding_net.mining import batch_all
from embedding_net.mining import rules as mining
from embedding_net.mining.distances import pairwise_distances


def batch(sizes, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(size, c) for c, size in enumerate(sizes)]).astype("int32")
    order = rng.permutation(len(labels))
    return labels[order], rng.normal(size=(len(labels), dim)).astype("float32")


def reference_sums(labels, distances, margin, soft_margin, weights):
    """Loops over (a, p, n) in float64: the weighted hinge sum and the weight of active triplets."""
    d = np.asarray(distances, dtype=np.float64)
    total = active = 0.0
    for a in range(len(labels)):
        for p in range(len(labels)):
            if p == a or labels[p] != labels[a]:
                continue
            for n in range(len(labels)):
                if labels[n] == labels[a]:
                    continue
                value = d[a, p] - d[a, n]
                term = math.log1p(math.exp(value)) if soft_margin else max(value + margin, 0.0)
                total += weights[a] * term
                active += weights[a] * (1.0 if soft_margin or term > 0 else 0.0)
    return total, active


def dense_sums(distances, labels, margin, soft_margin, weights):
    """The B^3 form, for automatic differentiation."""
    values, valid = mining.batch_all_triplet_values(distances, labels, 0.0)
    terms = ops.softplus(values) if soft_margin else ops.relu(values + margin)
    return ops.sum(ops.where(valid, terms, 0.0) * weights[:, None, None])


CASES = [
    pytest.param((4, 4, 4, 4), id="4x4"),
    pytest.param((3, 5, 1, 2, 6), id="uneven-with-singleton"),
    pytest.param((7,), id="one-class"),
    pytest.param((1, 1, 1), id="singletons"),
    # More than 8 positives per anchor: the hinge slot by slot, the soft margin in blocks.
    pytest.param((10, 3, 1, 4), id="ten-of-a-class"),
    pytest.param((12,), id="one-class-of-12"),
]
COMPARED = ("_hinges_by_comparison", "_soft_margin_by_comparison")
SORTED = ("_hinges_by_sorting", "_soft_margin_sums")
SLOTS = ("_hinges_by_slots",)


def record_paths(monkeypatch):
    """Wraps the path functions of batch_all; returns the list of names called."""
    calls = []
    for name in COMPARED + SORTED + SLOTS:
        original = getattr(batch_all, name)
        monkeypatch.setattr(batch_all, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    return calls


def check_against_every_triplet(sizes, soft_margin, weighted, **keywords):
    """The sums and their gradient against the loops and the dense B^3 form."""
    labels, embeddings = batch(sizes)
    weights = (np.random.default_rng(1).uniform(0.2, 2.0, len(labels)) if weighted
               else np.ones(len(labels))).astype("float32")
    x = tf.Variable(embeddings)
    with tf.GradientTape(persistent=True) as tape:
        distances = pairwise_distances(x)
        total, active = batch_all.batch_all_sums(distances, labels, 0.7, soft_margin,
                                                 weights if weighted else None, **keywords)
        dense = dense_sums(distances, labels, 0.7, soft_margin, weights)
    expected_total, expected_active = reference_sums(labels, distances.numpy(), 0.7, soft_margin, weights)
    np.testing.assert_allclose(float(total), expected_total, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(active), expected_active, rtol=1e-5, atol=1e-6)
    gradient = tape.gradient(total, x)
    expected_gradient = tape.gradient(dense, x)
    if expected_gradient is None:  # no valid triplet: nothing depends on x
        assert gradient is None or not np.any(gradient.numpy())
    else:
        np.testing.assert_allclose(gradient.numpy(), expected_gradient.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sizes", CASES)
@pytest.mark.parametrize("soft_margin", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_sums_and_gradients_match_every_triplet(sizes, soft_margin, weighted, monkeypatch):
    calls = record_paths(monkeypatch)
    # A block of 9 triplets forces several blocks, the last one partly padding.
    check_against_every_triplet(sizes, soft_margin, weighted, max_block_triplets=9 * 9)
    # More positives than the comparison takes: the hinge goes slot by slot, the soft margin in blocks.
    many_positives = max(sizes) - 1 > mining.MAX_POSITIVE_SLOTS
    assert calls == [(("_hinges_by_slots", "_soft_margin_sums") if many_positives else COMPARED)[int(soft_margin)]]


@pytest.mark.parametrize("sizes", [(5, 6, 4, 3), (11, 6, 4)], ids=["few-positives", "many-positives"])
def test_a_dynamic_batch_size_in_a_traced_function(sizes):
    labels, embeddings = batch(sizes, seed=3)
    spec = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 5], tf.float32)]

    @tf.function(input_signature=spec)
    def sums(labels, embeddings):
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            distances = pairwise_distances(embeddings)
            soft, _ = batch_all.batch_all_sums(distances, labels, 0.3, True, max_block_triplets=50)
            hinge, active = batch_all.batch_all_sums(distances, labels, 0.3)
            both = soft + hinge
        return soft, hinge, active, tape.gradient(both, embeddings)

    soft, hinge, active, gradient = sums(labels, embeddings)
    distances = pairwise_distances(embeddings).numpy()
    weights = np.ones(len(labels))
    np.testing.assert_allclose(float(soft), reference_sums(labels, distances, 0.3, True, weights)[0], rtol=1e-5)
    expected_hinge, expected_active = reference_sums(labels, distances, 0.3, False, weights)
    np.testing.assert_allclose([float(hinge), float(active)], [expected_hinge, expected_active], rtol=1e-5)
    assert np.all(np.isfinite(gradient.numpy())) and np.any(gradient.numpy())


@pytest.mark.parametrize("sizes", CASES)
def test_active_fraction_matches_the_triplet_values(sizes):
    labels, embeddings = batch(sizes, seed=2)
    distances = pairwise_distances(embeddings)
    values, valid = mining.batch_all_triplet_values(distances, labels, 0.5)
    valid = valid.numpy()
    fraction, count = batch_all.active_fraction(distances, labels, 0.5)
    assert float(count) == valid.sum()
    expected = (values.numpy()[valid] > 0).mean() if valid.any() else 0.0
    np.testing.assert_allclose(float(fraction), expected, atol=1e-7)


@pytest.mark.parametrize("batch_size, rows", [(4, 1), (128, 16), (256, 32), (1024, 2), (4096, 1)])
def test_blocks_hold_at_most_an_eighth_of_the_triplets_and_the_cap(batch_size, rows):
    assert batch_all.block_rows(batch_size) == rows
    assert rows * batch_size ** 2 <= max(batch_size ** 3 // 8, batch_size ** 2)
    assert rows == 1 or rows * batch_size ** 2 <= batch_all.MAX_BLOCK_TRIPLETS


@pytest.mark.parametrize("slots_limit, way", [(32, "_hinges_by_slots"), (1, "_hinges_by_sorting")])
def test_a_batch_too_large_to_compare_takes_an_o_b2_way(slots_limit, way, monkeypatch):
    # As if B were thousands: [B, M, B] above MAX_COMPARISON_VALUES goes slot by slot while
    # anchors have up to MAX_SLOT_PASSES positives (a P x K batch at B = 8,192), else sorts.
    labels, embeddings = batch((4, 4, 4, 4))
    distances = pairwise_distances(embeddings)
    compared = [t.numpy() for t in batch_all.hinges_per_anchor(distances, labels, 0.5)]
    calls = record_paths(monkeypatch)
    monkeypatch.setattr(mining, "MAX_COMPARISON_VALUES", len(labels) ** 2)
    monkeypatch.setattr(mining, "MAX_SLOT_PASSES", slots_limit)
    other = [t.numpy() for t in batch_all.hinges_per_anchor(distances, labels, 0.5)]
    assert calls == [way]
    np.testing.assert_allclose(other[0], compared[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(other[1], compared[1])


@pytest.mark.parametrize("sizes", CASES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("slot_passes, way", [(32, "_hinges_by_slots"), (0, "_hinges_by_sorting")])
def test_large_batch_ways_match_every_triplet(sizes, weighted, slot_passes, way, monkeypatch):
    """The hinge's ways for batches too large to compare, slot by slot (its gradient in closed
    form) and sorting, against the loops and automatic differentiation of the dense B^3 sums."""
    calls = record_paths(monkeypatch)
    monkeypatch.setattr(mining, "MAX_COMPARISON_VALUES", 1)
    monkeypatch.setattr(mining, "MAX_SLOT_PASSES", slot_passes)
    check_against_every_triplet(sizes, False, weighted)
    assert calls == [way]
