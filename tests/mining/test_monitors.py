"""Collapse monitors against brute-force loops."""

import itertools

import keras
import numpy as np
import pytest

from embedding_net.mining.monitors import ActiveTriplets, NegativeDistance, PositiveDistance, collapse_monitors


def brute_force(labels, embeddings, margin):
    d = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    positives = [d[a, p] for a, p in itertools.permutations(range(len(labels)), 2) if labels[a] == labels[p]]
    negatives = [d[a, n] for a, n in itertools.product(range(len(labels)), repeat=2) if labels[a] != labels[n]]
    triplets = [d[a, p] - d[a, n] + margin > 0
                for a, p, n in itertools.product(range(len(labels)), repeat=3)
                if a != p and labels[a] == labels[p] and labels[a] != labels[n]]
    return np.mean(positives), np.mean(negatives), np.mean(triplets)


def test_monitors_match_loops_and_average_over_batches():
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, 3, 9), rng.normal(size=(9, 4)).astype("float32")) for _ in range(2)]
    monitors = collapse_monitors(margin=0.5)
    for labels, embeddings in batches:
        for monitor in monitors:
            monitor.update_state(labels, embeddings)
    expected = np.mean([brute_force(l, e, 0.5) for l, e in batches], axis=0)
    np.testing.assert_allclose([float(m.result()) for m in monitors], expected, rtol=1e-5)


def test_batch_without_pairs_adds_nothing():
    monitor = PositiveDistance()
    monitor.update_state(np.array([0, 0]), np.array([[0.0, 0.0], [3.0, 4.0]], "float32"))
    monitor.update_state(np.array([0, 1, 2]), np.eye(3, dtype="float32"))  # no positive pair
    assert float(monitor.result()) == pytest.approx(5.0)
    negative = NegativeDistance()
    negative.update_state(np.array([1, 1]), np.eye(2, dtype="float32"))
    assert float(negative.result()) == 0.0


def test_monitors_in_fit_and_config_round_trip():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    from embedding_net.losses.triplet import TripletLoss

    model.compile(optimizer="adam", loss=TripletLoss(), metrics=collapse_monitors())
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    history = model.fit(x, np.repeat(np.arange(4), 2), epochs=1, verbose=0)
    assert {"positive_distance", "negative_distance", "active_triplets"} <= set(history.history)
    for cls in (PositiveDistance, NegativeDistance, ActiveTriplets):
        monitor = cls(distance="cosine")
        assert cls.from_config(monitor.get_config()).get_config() == monitor.get_config()
