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


@pytest.mark.parametrize("seed", range(4))
def test_batch_contrastive_matches_loops(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 12)
    embeddings = rng.normal(size=(12, 5)).astype("float32")
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    loss = BatchContrastiveLoss(positive_margin=0.2, negative_margin=0.8)
    assert float(loss(labels, embeddings)) == pytest.approx(brute_force(labels, embeddings, 0.2, 0.8), rel=1e-5)


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
