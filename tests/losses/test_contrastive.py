"""Contrastive losses against brute-force loops."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.losses.contrastive import BatchContrastiveLoss, ContrastiveLoss


def test_pair_contrastive_loss_matches_the_formula():
    same = np.array([1, 0, 0, 1], "float32")
    distances = np.array([0.5, 0.2, 1.5, 0.0], "float32")
    # Same pairs cost d^2; different pairs cost max(1 - d, 0)^2.
    expected = (0.25 + 0.64 + 0.0 + 0.0) / 4
    assert float(ContrastiveLoss(margin=1.0)(same, distances)) == pytest.approx(expected)


def brute_force(labels, embeddings, positive_margin, negative_margin):
    positives, negatives = [], []
    for a, b in itertools.product(range(len(labels)), repeat=2):
        d = float(np.linalg.norm(embeddings[a] - embeddings[b]))
        if a != b and labels[a] == labels[b]:
            positives.append(max(d - positive_margin, 0.0))
        elif labels[a] != labels[b]:
            negatives.append(max(negative_margin - d, 0.0))

    def mean_nonzero(values):
        values = [v for v in values if v > 0]
        return sum(values) / len(values) if values else 0.0

    return mean_nonzero(positives) + mean_nonzero(negatives)


def brute_force_gradient(labels, embeddings, positive_margin, negative_margin):
    """d(loss)/d(embeddings) of `brute_force`, pair by pair in float64: each active ordered pair
    (a, b) weighs (e_a - e_b) / d by 1 / (its kind's active pairs), negatives with a minus."""
    x = np.asarray(embeddings, np.float64)
    pairs = [(a, b) for a, b in itertools.product(range(len(labels)), repeat=2) if a != b]
    distance = {(a, b): np.linalg.norm(x[a] - x[b]) for a, b in pairs}
    positive = [(a, b) for a, b in pairs if labels[a] == labels[b] and distance[a, b] > positive_margin]
    negative = [(a, b) for a, b in pairs if labels[a] != labels[b] and distance[a, b] < negative_margin]
    gradient = np.zeros_like(x)
    for active, sign in ((positive, 1.0), (negative, -1.0)):
        for a, b in active:
            step = sign / len(active) * (x[a] - x[b]) / distance[a, b]
            gradient[a] += step
            gradient[b] -= step
    return gradient


@pytest.mark.parametrize("seed", range(4))
def test_batch_contrastive_matches_loops_in_value_and_gradient(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 12)
    embeddings = rng.normal(size=(12, 5)).astype("float32")
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    variable = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        value = BatchContrastiveLoss(positive_margin=0.2, negative_margin=0.8)(labels, variable)
    assert float(value) == pytest.approx(brute_force(labels, embeddings, 0.2, 0.8), rel=1e-5)
    want = brute_force_gradient(labels, embeddings, 0.2, 0.8)
    assert np.any(want)
    np.testing.assert_allclose(tape.gradient(value, variable).numpy(), want, rtol=1e-4, atol=1e-6)


def test_batch_contrastive_is_zero_without_pairs_and_finite_at_duplicates():
    loss = BatchContrastiveLoss()
    # No positive pair, and every negative pair is farther than the margin (sqrt 2 > 1).
    assert float(loss(np.arange(4), np.eye(4, dtype="float32"))) == 0.0
    embeddings = tf.Variable(np.ones((4, 3), "float32"))
    with tf.GradientTape() as tape:
        value = loss(np.array([0, 0, 1, 1]), embeddings)
    assert np.all(np.isfinite(tape.gradient(value, embeddings).numpy()))


def test_contrastive_losses_round_trip_and_check_arguments():
    for loss in (ContrastiveLoss(margin=2.0), BatchContrastiveLoss(0.1, 0.9, "cosine")):
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert restored.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="0.9, 0.1"):
        BatchContrastiveLoss(0.9, 0.1)
    with pytest.raises(ValueError, match="-1"):
        ContrastiveLoss(margin=-1)
