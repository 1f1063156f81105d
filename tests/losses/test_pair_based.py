"""Multi-similarity, supervised contrastive and circle losses against brute-force NumPy loops
(value and gradient), on random batches with repeated labels, single-image classes and no pairs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.losses import CircleLoss, MultiSimilarityLoss, SupConLoss, get_loss
from embedding_net.losses.pair_based import masked_logsumexp
from tests.losses import references


def random_batch(seed, size=12, dim=6, classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size)
    labels[-1] = classes + 5  # a class of one image: an anchor without positives
    return labels, rng.normal(size=(size, dim))


def value_and_gradient(loss, labels, embeddings):
    variable = tf.Variable(np.asarray(embeddings, "float32"))
    with tf.GradientTape() as tape:
        value = loss(labels, variable)
    return float(value), tape.gradient(value, variable).numpy()


CASES = [
    (MultiSimilarityLoss(), references.multi_similarity, {}),
    (MultiSimilarityLoss(alpha=1.0, beta=20.0, base=0.3), references.multi_similarity,
     dict(alpha=1.0, beta=20.0, base=0.3)),
    (MultiSimilarityLoss(mining_epsilon=0.1), references.multi_similarity, dict(mining_epsilon=0.1)),
    (SupConLoss(), references.supcon, {}),
    (SupConLoss(temperature=0.5), references.supcon, dict(temperature=0.5)),
    (CircleLoss(), references.circle, {}),
    (CircleLoss(margin=0.25, gamma=32.0), references.circle, dict(margin=0.25, gamma=32.0)),
]
IDS = ["ms", "ms_settings", "ms_mining", "supcon", "supcon_t0.5", "circle", "circle_settings"]


@pytest.mark.parametrize("loss, reference, settings", CASES, ids=IDS)
@pytest.mark.parametrize("seed", range(3))
def test_value_and_gradient_match_loops(loss, reference, settings, seed):
    labels, embeddings = random_batch(seed)
    embeddings = embeddings.astype("float32").astype(np.float64)
    value, gradient = value_and_gradient(loss, labels, embeddings)
    assert value == pytest.approx(reference(labels, embeddings, **settings), rel=1e-5, abs=1e-6)
    if reference is references.circle:
        # The pair weights are constants of the gradient: differentiate with them frozen.
        frozen = references.cosine_matrix(embeddings)
        expected = references.numerical_gradient(
            lambda e: references.circle_with_weights(labels, e, frozen, **settings), embeddings)
    else:
        expected = references.numerical_gradient(lambda e: reference(labels, e, **settings), embeddings)
    scale = np.abs(expected).max()
    assert np.abs(gradient - expected).max() <= 1e-4 * max(scale, 1e-3)


@pytest.mark.parametrize("loss", [case[0] for case in CASES], ids=IDS)
def test_no_valid_pair_gives_zero_and_finite_gradients(loss):
    one_class = np.zeros(4, "int64")       # positives, no negative
    all_different = np.arange(4)           # negatives, no positive
    for labels in (one_class, all_different):
        value, gradient = value_and_gradient(loss, labels, np.random.default_rng(0).normal(size=(4, 3)))
        assert np.isfinite(value) and np.all(np.isfinite(gradient))
        if not isinstance(loss, MultiSimilarityLoss) or loss.mining_epsilon is not None:
            assert value == 0.0
    # Duplicated and zero embeddings keep every gradient finite.
    value, gradient = value_and_gradient(loss, np.array([0, 0, 1, 1]), np.array([[1, 0], [1, 0], [0, 0], [0, 1.0]]))
    assert np.isfinite(value) and np.all(np.isfinite(gradient))


def test_perfect_batch_costs_little_and_mixed_batch_more():
    labels = np.array([0, 0, 1, 1])
    perfect = np.array([[1, 0], [1, 0], [-1, 0], [-1, 0.0]])
    mixed = np.array([[1, 0], [-1, 0], [1, 0], [-1, 0.0]])
    for loss in (MultiSimilarityLoss(), SupConLoss(), CircleLoss()):
        assert float(loss(labels, perfect)) < float(loss(labels, mixed))
    # Circle loss, m = 0.4, gamma = 80: the positive (s = 1) has weight 1 + m - 1 = 0.4 and logit
    # -80 * 0.4 * (1 - 0.6) = -12.8; both negatives (s = -1) have weight max(-1 + 0.4, 0) = 0,
    # logit 0, so every anchor costs softplus(-12.8 + log 2) = log(1 + 2 exp(-12.8)).
    assert float(CircleLoss()(labels, perfect)) == pytest.approx(np.log1p(2 * np.exp(-12.8)), rel=1e-4)


def test_computes_in_float32_from_half_precision():
    labels, embeddings = random_batch(1)
    for loss in (MultiSimilarityLoss(), SupConLoss(), CircleLoss()):
        value = loss(labels, tf.constant(embeddings, tf.bfloat16))
        assert value.dtype == tf.float32
        assert float(value) == pytest.approx(float(loss(labels, embeddings.astype("float32"))), rel=0.05)


def test_masked_logsumexp_matches_numpy_and_is_zero_on_empty_rows():
    values = np.array([[1.0, 2.0, 3.0], [5.0, -1.0, 0.0]], "float32")
    mask = np.array([[True, False, True], [False, False, False]])
    plain = masked_logsumexp(values, mask).numpy()
    assert plain[0] == pytest.approx(np.log(np.exp(1) + np.exp(3)), rel=1e-6) and plain[1] == 0.0
    with_one = masked_logsumexp(values, mask, add_one=True).numpy()
    assert with_one[0] == pytest.approx(np.log(1 + np.exp(1) + np.exp(3)), rel=1e-6) and with_one[1] == 0.0


@pytest.mark.parametrize("name", ["multi_similarity", "supcon", "circle"])
def test_registered_round_trip_and_refuse_bad_arguments(name):
    loss = get_loss(name)()
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.get_config() == loss.get_config()
    labels, embeddings = random_batch(2)
    assert float(restored(labels, embeddings)) == pytest.approx(float(loss(labels, embeddings)))
    with pytest.raises(ValueError, match="cross_replica|sample weights"):
        loss(labels, embeddings, sample_weight=np.ones(len(labels)))


@pytest.mark.parametrize("build, message", [
    (lambda: MultiSimilarityLoss(alpha=0), "`alpha` must be > 0. Received: 0"),
    (lambda: MultiSimilarityLoss(base=2), "`base` must be in"),
    (lambda: MultiSimilarityLoss(mining_epsilon=-1), "`mining_epsilon`"),
    (lambda: SupConLoss(temperature=0), "`temperature` must be > 0"),
    (lambda: CircleLoss(margin=1.5), "`margin` must be in"),
    (lambda: CircleLoss(gamma=-1), "`gamma` must be > 0"),
])
def test_errors_echo_the_value(build, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        build()
