"""Pairwise distances checked against brute-force float64 loops over every pair of rows."""


import numpy as np
import pytest
import tensorflow as tf

from helpers import reference_distance, reference_matrix
from embedding_net.evaluation.distances import list_distances
from embedding_net.mining.distances import pairwise_distances

DISTANCES = list_distances()
from embedding_net.evaluation.distances import check_distance

RTOL = 1e-5
ATOL = 1e-6


def computed(embeddings, distance):
    return np.asarray(pairwise_distances(embeddings, distance))


def random_embeddings(seed, batch=10, dim=8, normalised=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, dim))
    if normalised:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    else:
        x *= rng.uniform(0.1, 10.0, size=(batch, 1))  # rows of very different norms
    return x.astype("float32")


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("normalised", [True, False], ids=["l2_normalised", "raw"])
def test_matches_reference_loop(distance, normalised):
    for seed in range(3):
        x = random_embeddings(seed, normalised=normalised)
        got = computed(x, distance)
        assert got.shape == (10, 10)
        assert got.dtype == np.float32
        want = reference_matrix(x, distance)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, want.max()))
        assert np.all(np.diag(got) == 0.0)
        assert np.all(got >= 0.0)


@pytest.mark.parametrize("distance", DISTANCES)
def test_symmetric(distance):
    x = random_embeddings(4, normalised=False)
    got = computed(x, distance)
    np.testing.assert_allclose(got, got.T, rtol=RTOL, atol=ATOL * max(1.0, got.max()))


@pytest.mark.parametrize("distance", DISTANCES)
def test_duplicate_rows_are_exactly_zero(distance):
    """Coinciding embeddings are at distance exactly 0, not at a rounding residue.

    Several seeds and scales, since whether a residue survives depends on the values; the
    residue matters for `euclidean`, where sqrt turns a 1e-6 leftover into a 1e-3 distance.
    """
    failures = []
    for seed in range(8):
        for scale in (1.0, 10.0):
            rng = np.random.default_rng(seed)
            x = (rng.normal(size=(6, 16)) * scale).astype("float32")
            x[3] = x[0]
            x[5] = x[0]
            got = computed(x, distance)
            assert np.all(np.diag(got) == 0.0)
            # The entries between distinct rows still match the reference.
            want = reference_matrix(x, distance)
            distinct = want > 0.0
            np.testing.assert_allclose(got[distinct], want[distinct], rtol=RTOL, atol=ATOL)
            duplicates = [got[i, j] for i, j in [(0, 3), (3, 0), (0, 5), (5, 0), (3, 5), (5, 3)]]
            if max(duplicates) != 0.0:
                failures.append((seed, scale, float(max(duplicates))))
    assert not failures, f"nonzero distance between duplicate rows (seed, scale, max d): {failures}"


def test_duplicate_rows_are_exactly_zero_hand_made():
    x = np.array([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.5, -0.1, 0.0]], dtype="float32")
    for distance in DISTANCES:
        got = computed(x, distance)
        assert got[0, 1] == 0.0 and got[1, 0] == 0.0, (distance, got[0, 1])


def test_cosine_zero_vector_counts_as_orthogonal():
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [-2.0, 0.5, 1.0]], dtype="float32")
    got = computed(x, "cosine")
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, reference_matrix(x, "cosine"), rtol=RTOL, atol=ATOL)
    assert got[0, 0] == 0.0
    np.testing.assert_allclose(got[0, 1:], 1.0, rtol=RTOL)


@pytest.mark.parametrize("distance", DISTANCES)
def test_gradient_finite_when_rows_coincide(distance):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4)).astype("float32")
    x[2] = x[0]
    x[4] = x[0]
    variable = tf.Variable(x)
    weights = tf.constant(rng.uniform(0.5, 1.5, size=(5, 5)).astype("float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(weights * tf.convert_to_tensor(pairwise_distances(variable, distance)))
    gradient = tape.gradient(total, variable)
    assert gradient is not None
    assert np.all(np.isfinite(gradient.numpy())), gradient.numpy()


def test_euclidean_gradient_finite_two_identical_rows_only():
    variable = tf.Variable(np.array([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5]], dtype="float32"))
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(tf.convert_to_tensor(pairwise_distances(variable, "euclidean")))
    gradient = tape.gradient(total, variable).numpy()
    assert np.all(np.isfinite(gradient)), gradient


@pytest.mark.parametrize("name", ["manhattan", "Euclidean", "", None])
def test_unknown_distance_raises_with_value(name):
    x = random_embeddings(0, batch=3)
    with pytest.raises(ValueError) as info:
        pairwise_distances(x, name)
    assert repr(name) in str(info.value)
    with pytest.raises(ValueError) as info:
        check_distance(name)
    assert repr(name) in str(info.value)


def reference_gradient(x, weights, distance):
    """d/dx of sum_ij w_ij dist(x_i, x_j) in float64, pair by pair; pairs at distance 0
    (the diagonal, duplicates) pass nothing, as the `where` that zeroes them does. For the
    cosine, a zero row is normalised with the implementation's clamp of its norm at 1e-6."""
    x = np.asarray(x, np.float64)
    gradient = np.zeros_like(x)
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j or reference_distance(x[i], x[j], distance) == 0.0:
                continue
            if distance == "cosine":
                # u = x / max(|x|, 1e-6): at a zero row the clamp makes u linear in x, slope 1e6.
                ni, nj = max(np.linalg.norm(x[i]), 1e-6), max(np.linalg.norm(x[j]), 1e-6)
                ui, uj = x[i] / ni, x[j] / nj
                radial_i = ui * (ui @ uj) if np.linalg.norm(x[i]) > 1e-6 else 0.0
                radial_j = uj * (ui @ uj) if np.linalg.norm(x[j]) > 1e-6 else 0.0
                gradient[i] -= weights[i, j] * (uj - radial_i) / ni
                gradient[j] -= weights[i, j] * (ui - radial_j) / nj
            else:
                difference = x[i] - x[j]
                factor = 2.0 if distance == "squared_euclidean" else 1.0 / np.linalg.norm(difference)
                gradient[i] += weights[i, j] * factor * difference
                gradient[j] -= weights[i, j] * factor * difference
    return gradient


@pytest.mark.parametrize("distance", DISTANCES)
def test_gradient_matches_reference(distance):
    """The closed-form gradients (no B x B temporaries kept for the backward pass) against the
    derivative written out pair by pair, with duplicates, a zero row and rows of unequal norms."""
    for seed in range(3):
        x = random_embeddings(seed, batch=9, dim=5, normalised=False)
        x[3] = x[0]
        x[7] = 0.0
        weights = np.random.default_rng(seed).uniform(-1.0, 1.0, size=(9, 9)).astype("float32")
        variable = tf.Variable(x)
        with tf.GradientTape() as tape:
            total = tf.reduce_sum(tf.constant(weights) * tf.convert_to_tensor(pairwise_distances(variable, distance)))
        got = tape.gradient(total, variable).numpy()
        want = reference_gradient(x, weights, distance)
        # The zero row's cosine gradient is ~1e6 (the clamp): compared on its own, so that its
        # scale does not set the tolerance of the other rows.
        others = np.arange(len(x)) != 7
        np.testing.assert_allclose(got[others], want[others], rtol=1e-4, atol=1e-5 * np.abs(want[others]).max())
        np.testing.assert_allclose(got[7], want[7], rtol=1e-4, atol=1e-5 * max(np.abs(want[7]).max(), 1.0))
