"""TripletLoss against a brute-force float64 reference over every pair and triplet."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import reference_distance
from embedding_net.evaluation.distances import list_distances
from embedding_net.losses.triplet import TripletLoss, triplet_loss

MININGS = ("all", "hard", "semi_hard")
DISTANCES = list_distances()
RTOL = 1e-5
ATOL = 1e-6


# ----------------------------------------------------------------------------- reference


def reference_loss(labels, embeddings, margin, mining, distance):
    """The spec, written out with loops in float64."""
    labels = [int(t) for t in np.reshape(labels, (-1,))]
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(labels)
    d = [[0.0 if i == j else reference_distance(x[i], x[j], distance) for j in range(n)]
         for i in range(n)]

    def positives(a):
        return [p for p in range(n) if p != a and labels[p] == labels[a]]

    def negatives(a):
        return [m for m in range(n) if labels[m] != labels[a]]

    if mining == "all":
        active = []
        for a in range(n):
            for p in positives(a):
                for m in negatives(a):
                    value = max(d[a][p] - d[a][m] + margin, 0.0)
                    if value > 0.0:
                        active.append(value)
        return sum(active) / len(active) if active else 0.0
    if mining == "hard":
        losses = []
        for a in range(n):
            if not positives(a):
                continue
            if not negatives(a):
                losses.append(0.0)
                continue
            hardest_positive = max(d[a][p] for p in positives(a))
            hardest_negative = min(d[a][m] for m in negatives(a))
            losses.append(max(hardest_positive - hardest_negative + margin, 0.0))
        return sum(losses) / len(losses) if losses else 0.0
    if mining == "semi_hard":
        losses = []
        for a in range(n):
            negative_distances = [d[a][m] for m in negatives(a)]
            if not negative_distances:
                continue
            for p in positives(a):
                farther = [v for v in negative_distances if v > d[a][p]]
                chosen = min(farther) if farther else max(negative_distances)
                losses.append(max(d[a][p] - chosen + margin, 0.0))
        return sum(losses) / len(losses) if losses else 0.0
    raise AssertionError(mining)


# ----------------------------------------------------------------------------- helpers


def loss_value(labels, embeddings, **kwargs):
    value = TripletLoss(**kwargs)(labels, embeddings)
    return float(keras.ops.convert_to_numpy(value))


def random_batch(seed, normalised, batch=12, dim=5):
    """B=12 with 3-5 classes, repeated labels and at least one single-image class."""
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(3, 6))
    sizes = [1] * n_classes
    for _ in range(batch - n_classes - 1):  # keep class 0 a single image
        sizes[int(rng.integers(1, n_classes))] += 1
    sizes[0] = 1
    sizes[-1] += batch - sum(sizes)
    labels = rng.permutation(np.repeat(np.arange(n_classes), sizes)).astype("int32")
    # Class centres plus noise, so that the loss mixes active and inactive triplets.
    centres = rng.normal(size=(n_classes, dim))
    x = centres[labels] + 0.8 * rng.normal(size=(batch, dim))
    if normalised:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    else:
        x *= rng.uniform(0.3, 2.0, size=(batch, 1))
    return labels, x.astype("float32")


def margin_for(distance, normalised):
    # Squared distances of raw embeddings are ~10x larger: scale the margin along.
    return 2.0 if distance == "squared_euclidean" and not normalised else 0.3


# ----------------------------------------------------------------------------- reference tests


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("normalised", [True, False], ids=["l2_normalised", "raw"])
def test_matches_reference(mining, distance, normalised):
    margin = margin_for(distance, normalised)
    nonzero = 0
    for seed in range(4):
        labels, x = random_batch(seed, normalised)
        got = loss_value(labels, x, margin=margin, mining=mining, distance=distance)
        want = reference_loss(labels, x, margin, mining, distance)
        assert got == pytest.approx(want, rel=RTOL, abs=ATOL), (seed, got, want)
        nonzero += want > 0
    assert nonzero >= 3  # the batches exercise the loss, not just its zero


@pytest.mark.parametrize("mining", ["all", "semi_hard"])
@pytest.mark.parametrize("distance", DISTANCES)
def test_large_batch_paths_match_reference(mining, distance, monkeypatch):
    # As if B were thousands: the sorting ways (O(B^2) memory) instead of [B, M, B] comparisons.
    from embedding_net.mining import rules

    monkeypatch.setattr(rules, "MAX_COMPARISON_VALUES", 1)
    for seed in range(3):
        labels, x = random_batch(seed, True)
        got = loss_value(labels, x, margin=0.3, mining=mining, distance=distance)
        assert got == pytest.approx(reference_loss(labels, x, 0.3, mining, distance), rel=RTOL, abs=ATOL), seed


@pytest.mark.parametrize("mining", MININGS)
def test_functional_form_matches_class(mining):
    labels, x = random_batch(7, normalised=True)
    functional = float(triplet_loss(labels, x, 0.3, mining, "cosine"))
    assert functional == pytest.approx(
        loss_value(labels, x, margin=0.3, mining=mining, distance="cosine"), rel=RTOL
    )


# ----------------------------------------------------------------------------- degenerate batches


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_no_positive_pair_gives_zero(mining, distance):
    rng = np.random.default_rng(0)
    labels = np.arange(6, dtype="int32")
    x = rng.normal(size=(6, 4)).astype("float32")
    value = loss_value(labels, x, margin=0.5, mining=mining, distance=distance)
    assert value == 0.0


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
@pytest.mark.parametrize("margin", [0.2, 1.5])
def test_no_negative_gives_zero(mining, distance, margin):
    """All labels equal: no triplet exists, so the loss is 0 whatever the margin.

    A margin above 1 checks that the stand-in used for "no negative" cannot leak into the loss.
    """
    rng = np.random.default_rng(1)
    labels = np.full(6, 3, dtype="int32")
    x = rng.normal(size=(6, 4)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    value = loss_value(labels, x, margin=margin, mining=mining, distance=distance)
    assert value == 0.0
    assert reference_loss(labels, x, margin, mining, distance) == 0.0


@pytest.mark.parametrize("mining", MININGS)
def test_single_image_batch_gives_zero(mining):
    value = loss_value(np.array([0]), np.ones((1, 3), "float32"), mining=mining)
    assert value == 0.0


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_perfectly_separated_batch_gives_zero(mining, distance):
    """Three tight clusters on orthogonal axes: every d(a,p) + margin < every d(a,n)."""
    rng = np.random.default_rng(2)
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2], dtype="int32")
    centres = 5.0 * np.eye(3)
    x = (centres[labels] + 0.01 * rng.normal(size=(9, 3))).astype("float32")
    assert loss_value(labels, x, margin=0.2, mining=mining, distance=distance) == 0.0
    assert reference_loss(labels, x, 0.2, mining, distance) == 0.0


HAND_LABELS = np.array([0, 0, 1, 1], dtype="int32")
HAND_EMBEDDINGS = np.array([[0.0], [1.0], [1.1], [3.0]], dtype="float32")


@pytest.mark.parametrize(
    "mining, expected", [("all", 0.86), ("hard", 0.825), ("semi_hard", 0.3)]
)
def test_hand_derived_value(mining, expected):
    """Points on a line x = [0, 1, 1.1, 3], labels [0, 0, 1, 1], euclidean, margin 0.2.

    Distances: d01=1, d02=1.1, d03=3, d12=0.1, d13=2, d23=1.9.
    Triplet values d(a,p) - d(a,n) + 0.2 for (a, p; n):
        (0,1; 2)=0.1   (0,1; 3)=-1.8   (1,0; 2)=1.1   (1,0; 3)=-0.8
        (2,3; 0)=1.0   (2,3; 1)=2.0    (3,2; 0)=-0.9  (3,2; 1)=0.1
    all: active values 0.1, 1.1, 1.0, 2.0, 0.1 -> 4.3 / 5 = 0.86.
    hard: anchor 0: 1 - 1.1 + .2 = 0.1; anchor 1: 1 - 0.1 + .2 = 1.1;
          anchor 2: 1.9 - 0.1 + .2 = 2.0; anchor 3: 1.9 - 2 + .2 = 0.1 -> 3.3 / 4 = 0.825.
    semi_hard: (0,1): nearest negative beyond 1 is 1.1 -> 0.1;
               (1,0): negatives {0.1, 2}, beyond 1 is 2 -> max(-0.8, 0) = 0;
               (2,3): negatives {1.1, 0.1}, none beyond 1.9, farthest 1.1 -> 1.0;
               (3,2): negatives {3, 2}, beyond 1.9 the nearest is 2 -> 0.1
               -> 1.2 / 4 = 0.3.
    """
    value = loss_value(HAND_LABELS, HAND_EMBEDDINGS, margin=0.2, mining=mining,
                       distance="euclidean")
    assert value == pytest.approx(expected, rel=RTOL)
    # The reference sees the float32 value of 1.1, hence rel=1e-6 and not exact.
    assert reference_loss(HAND_LABELS, HAND_EMBEDDINGS, 0.2, mining, "euclidean") == (
        pytest.approx(expected, rel=1e-6)
    )


def test_semi_hard_tie_takes_strictly_farther_negative():
    """x = [0, 1, -1, 3], labels [0, 0, 1, 1], euclidean, margin 0.2 (all distances exact).

    Distances: d01=1, d02=1, d03=3, d12=2, d13=2, d23=4.
    (0,1): negatives {1, 3}; the one at 1 ties d(0,1)=1 and is not farther -> 3 -> 0.
    (1,0): negatives {2, 2} -> 2 -> 0.          (2,3): negatives {1, 2}, none beyond 4 -> 2 -> 2.2.
    (3,2): negatives {3, 2}, none beyond 4 -> 3 -> 1.2.       Mean (0 + 0 + 2.2 + 1.2) / 4 = 0.85.
    Taking the tied negative at 1 for (0,1) would give 0.9 instead.
    """
    labels = np.array([0, 0, 1, 1], dtype="int32")
    x = np.array([[0.0], [1.0], [-1.0], [3.0]], dtype="float32")
    value = loss_value(labels, x, margin=0.2, mining="semi_hard", distance="euclidean")
    assert value == pytest.approx(0.85, rel=RTOL)
    assert reference_loss(labels, x, 0.2, "semi_hard", "euclidean") == pytest.approx(0.85)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_gradient_finite_with_duplicate_embeddings(mining, distance):
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 3], dtype="int32")
    x = rng.normal(size=(8, 4)).astype("float32")
    x[1] = x[0]  # duplicate positive pair
    x[3] = x[0]  # duplicate across classes (a negative at distance 0)
    x[6] = x[5]
    variable = tf.Variable(x)
    loss = TripletLoss(margin=0.5, mining=mining, distance=distance)
    with tf.GradientTape() as tape:
        value = loss(labels, variable)
    gradient = tape.gradient(value, variable)
    assert np.isfinite(float(value))
    assert gradient is not None
    assert np.all(np.isfinite(gradient.numpy())), gradient.numpy()


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("mining", MININGS)
def test_gradient_finite_when_every_embedding_coincides(mining, distance):
    labels = np.array([0, 0, 1, 1], dtype="int32")
    variable = tf.Variable(np.ones((4, 3), dtype="float32"))
    loss = TripletLoss(margin=0.2, mining=mining, distance=distance)
    with tf.GradientTape() as tape:
        value = loss(labels, variable)
    gradient = tape.gradient(value, variable)
    assert float(value) == pytest.approx(0.2, rel=RTOL)  # every distance is 0: the margin
    assert np.all(np.isfinite(gradient.numpy())), gradient.numpy()


# ----------------------------------------------------------------------------- configuration


def test_config_round_trip():
    loss = TripletLoss(margin=0.7, mining="hard", distance="cosine", name="my_triplet")
    config = loss.get_config()
    assert config["margin"] == 0.7
    assert config["mining"] == "hard"
    assert config["distance"] == "cosine"
    labels, x = random_batch(5, normalised=True)
    for restored in (
        TripletLoss.from_config(config),
        keras.losses.deserialize(keras.losses.serialize(loss)),
    ):
        assert isinstance(restored, TripletLoss)
        assert (restored.margin, restored.mining, restored.distance, restored.name) == (
            0.7, "hard", "cosine", "my_triplet"
        )
        assert float(restored(labels, x)) == float(loss(labels, x))


@pytest.mark.parametrize(
    "kwargs, echoed",
    [
        ({"mining": "hardest"}, "hardest"),
        ({"mining": "semi-hard"}, "semi-hard"),
        ({"distance": "manhattan"}, "manhattan"),
        ({"margin": -0.1}, "-0.1"),
        ({"margin": float("nan")}, "nan"),
    ],
)
def test_invalid_arguments_raise(kwargs, echoed):
    with pytest.raises(ValueError) as info:
        TripletLoss(**kwargs)
    assert echoed in str(info.value)


def test_functional_invalid_mining_raises():
    labels, x = random_batch(0, normalised=True)
    with pytest.raises(ValueError, match="bogus"):
        triplet_loss(labels, x, 0.2, "bogus", "euclidean")


# ----------------------------------------------------------------------------- label shapes, Keras


@pytest.mark.parametrize("mining", MININGS)
def test_column_labels_give_same_value(mining):
    labels, x = random_batch(6, normalised=False)
    flat = loss_value(labels, x, mining=mining)
    column = loss_value(labels[:, None], x, mining=mining)
    assert column == flat
    assert flat == pytest.approx(reference_loss(labels, x, 0.2, mining, "euclidean"), rel=RTOL)


@pytest.mark.parametrize(
    "mining, jit_compile",
    [("all", False), ("hard", False), ("semi_hard", False), ("semi_hard", True)],
)
def test_compile_and_fit_one_step(mining, jit_compile):
    """One training step; XLA too, which Keras picks by default on a GPU (jit_compile="auto")."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = np.repeat(np.arange(4), 4).astype("int32")  # integer labels, shape [B]
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    loss = TripletLoss(mining=mining)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss, jit_compile=jit_compile)
    # Keras evaluates the same value as the loss called on the model's predictions.
    evaluated = model.evaluate(x, y, batch_size=16, verbose=0)
    direct = float(loss(y, model.predict(x, batch_size=16, verbose=0)))
    assert evaluated == pytest.approx(direct, rel=RTOL, abs=ATOL)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1
    assert np.isfinite(history.history["loss"][0])
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


# ----------------------------------------------------------------------------- soft margin, weights


def weighted_reference(labels, embeddings, margin, mining, distance, soft, weights):
    """The loops of `reference_loss`, with anchor weights and the soft margin."""
    labels = [int(t) for t in labels]
    x = np.asarray(embeddings, dtype=np.float64)
    n = len(labels)
    d = [[0.0 if i == j else reference_distance(x[i], x[j], distance) for j in range(n)] for i in range(n)]

    def hinge(difference):
        return math.log1p(math.exp(difference)) if soft else max(difference + margin, 0.0)

    terms = []  # (weight, value, counted)
    for a in range(n):
        positives = [p for p in range(n) if p != a and labels[p] == labels[a]]
        negatives = [m for m in range(n) if labels[m] != labels[a]]
        if mining == "all":
            for p in positives:
                for m in negatives:
                    value = hinge(d[a][p] - d[a][m])
                    terms.append((weights[a], value, value > 0))
        elif mining == "hard" and positives:
            value = hinge(max(d[a][p] for p in positives) - min(d[a][m] for m in negatives)) if negatives else 0.0
            terms.append((weights[a], value, True))
        elif mining == "semi_hard" and negatives:
            for p in positives:
                farther = [d[a][m] for m in negatives if d[a][m] > d[a][p]]
                chosen = min(farther) if farther else max(d[a][m] for m in negatives)
                terms.append((weights[a], hinge(d[a][p] - chosen), True))
    total = sum(w * v for w, v, _ in terms)
    count = sum(w for w, _, counted in terms if counted)
    return total / count if count else 0.0


@pytest.mark.parametrize("mining", ["all", "hard", "semi_hard"])
@pytest.mark.parametrize("soft", [False, True])
def test_soft_margin_and_sample_weights_match_loops(mining, soft):
    rng = np.random.default_rng(7)
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    embeddings = rng.normal(size=(8, 4)).astype("float32")
    weights = rng.uniform(0.1, 2.0, 8).astype("float32")
    loss = TripletLoss(margin=0.3, mining=mining, soft_margin=soft)
    expected = weighted_reference(labels, embeddings, 0.3, mining, "euclidean", soft, weights)
    assert float(loss(labels, embeddings, sample_weight=weights)) == pytest.approx(expected, rel=1e-5)
    uniform = weighted_reference(labels, embeddings, 0.3, mining, "euclidean", soft, np.ones(8))
    assert float(loss(labels, embeddings)) == pytest.approx(uniform, rel=1e-5)
    assert float(loss(labels, embeddings, sample_weight=np.full(8, 3.0, "float32"))) == pytest.approx(uniform, rel=1e-5)


def test_soft_margin_round_trips_and_trains_with_weights():
    loss = TripletLoss(mining="hard", soft_margin=True)
    assert keras.losses.deserialize(keras.losses.serialize(loss)).soft_margin is True
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=loss)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    history = model.fit(x, np.repeat(np.arange(4), 2), sample_weight=np.linspace(0.5, 1.5, 8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# ----------------------------------------------------------------------------- cross_replica

from embedding_net.losses.contrastive import BatchContrastiveLoss  # noqa: E402  (appended section)


@pytest.mark.parametrize(
    "loss_class, kwargs",
    [(TripletLoss, {"mining": "all"}), (TripletLoss, {"mining": "hard"}),
     (TripletLoss, {"mining": "semi_hard", "soft_margin": True}),
     (BatchContrastiveLoss, {"positive_margin": 0.1, "negative_margin": 1.5})],
)
def test_cross_replica_is_a_no_op_on_one_device_and_round_trips(loss_class, kwargs):
    """Outside a multi-replica step, gathering and scaling change nothing: same value, same
    gradient; the option survives get_config / from_config and Keras serialisation."""
    labels, x = random_batch(3, normalised=False)
    weights = np.linspace(0.5, 1.5, len(labels)).astype("float32")
    plain, gathered = loss_class(**kwargs), loss_class(cross_replica=True, **kwargs)
    assert plain.get_config()["cross_replica"] is False
    assert gathered.get_config()["cross_replica"] is True
    for restored in (loss_class.from_config(gathered.get_config()),
                     keras.losses.deserialize(keras.losses.serialize(gathered))):
        assert isinstance(restored, loss_class) and restored.cross_replica is True
    values = []
    for loss in (plain, gathered):
        embeddings = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = loss(labels, embeddings, sample_weight=weights if loss_class is TripletLoss else None)
        values.append((float(value), tape.gradient(value, embeddings).numpy()))
    assert values[0][0] == values[1][0]
    np.testing.assert_array_equal(values[0][1], values[1][1])


def test_configs_saved_before_cross_replica_still_load():
    for loss in (TripletLoss(mining="hard"), BatchContrastiveLoss()):
        config = loss.get_config()
        del config["cross_replica"]
        assert type(loss).from_config(config).cross_replica is False


def test_cross_replica_loss_trains_on_one_device():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=TripletLoss(cross_replica=True))
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    history = model.fit(x, np.repeat(np.arange(4), 4), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
