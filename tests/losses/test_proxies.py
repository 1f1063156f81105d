"""Class centres and the losses trained against them (CosFace, Proxy Anchor, sub-center
ArcFace), against NumPy loops; their training models, optimizer multipliers and saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.losses import ArcFace, ClassCentres, CosFace, ProxyAnchorLoss, build_proxy_model, get_loss
from tests.losses import references


def batch(seed, size=10, dim=5, classes=4):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size)
    return labels, rng.normal(size=(size, dim))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("settings", [{}, {"margin": 0.2, "alpha": 16.0}])
def test_proxy_anchor_matches_loops_in_value_and_gradient(seed, settings):
    labels, embeddings = batch(seed)
    centres = ClassCentres(6)  # classes 4 and 5 are absent from the batch: negatives only
    centres.build((None, 5))
    proxies = np.asarray(centres.centers.numpy(), np.float64).T
    loss = ProxyAnchorLoss(**settings)
    variable = tf.Variable(embeddings.astype("float32"))
    with tf.GradientTape() as tape:
        value = loss(labels, centres(variable))
    gradient = tape.gradient(value, variable).numpy()
    embeddings = variable.numpy().astype(np.float64)
    assert float(value) == pytest.approx(references.proxy_anchor(labels, embeddings, proxies, **settings), rel=1e-5)
    expected = references.numerical_gradient(lambda e: references.proxy_anchor(labels, e, proxies, **settings),
                                              embeddings)
    assert np.abs(gradient - expected).max() <= 1e-4 * max(np.abs(expected).max(), 1e-3)


@pytest.mark.parametrize("sub_centers", [1, 3])
def test_cosface_cross_entropy_matches_loops(sub_centers):
    labels, embeddings = batch(1)
    layer = CosFace(4, scale=16.0, margin=0.3, sub_centers=sub_centers)
    logits = layer(embeddings.astype("float32"), labels, training=True)
    value = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    centres = layer.centers.numpy().astype(np.float64)
    assert centres.shape == (5, 4 * sub_centers)
    expected = references.cosface(labels, embeddings, centres, scale=16.0, margin=0.3, sub_centers=sub_centers)
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # At inference no margin: plain scaled cosines.
    plain = layer(embeddings.astype("float32"), labels, training=False).numpy()
    assert np.allclose(plain / 16.0, layer.cosines(embeddings.astype("float32")).numpy(), atol=1e-6)


def test_sub_centres_take_each_class_its_nearest_centre():
    layer = ArcFace(2, sub_centers=2, margin=0.0, scale=1.0)
    layer.build((None, 2))
    # Class 0 owns columns 0 and 1 (x and -x), class 1 columns 2 and 3 (y and -y).
    layer.centers.assign(np.array([[1, -1, 0, 0], [0, 0, 1, -1]], "float32"))
    cosines = layer.cosines(np.array([[-1.0, 0.0], [0.0, -2.0]], "float32")).numpy()
    assert np.allclose(cosines, [[1, 0], [0, 1]], atol=1e-5)


def test_a_batch_of_one_class_has_no_negatives_and_stays_finite():
    # Class 0 alone: its proxy has no negatives, the others no positives; masked sums give 0.
    labels, embeddings = np.zeros(4, "int64"), np.random.default_rng(3).normal(size=(4, 5))
    centres = ClassCentres(3)
    value = ProxyAnchorLoss()(labels, centres(embeddings.astype("float32")))
    proxies = np.asarray(centres.centers.numpy(), np.float64).T
    assert np.isfinite(float(value))
    assert float(value) == pytest.approx(references.proxy_anchor(labels, embeddings, proxies), rel=1e-5)


@pytest.mark.parametrize("head", [ClassCentres(5, sub_centers=2, name="proxy_anchor"),
                                  CosFace(5, name="cosface"), ArcFace(5, sub_centers=3, name="arcface")])
def test_proxy_models_save_reload_and_keep_the_tower(head, tmp_path):
    from embedding_net.models.builders import build_embedding_model

    tower = build_embedding_model("conv4", (28, 28, 1), 8)
    model = build_proxy_model(tower, head)
    images = np.random.default_rng(0).integers(0, 255, (4, 28, 28, 1)).astype("uint8")
    inputs = images if type(head) is ClassCentres else [images, np.array([0, 1, 2, 3])]
    before = model.predict_on_batch(inputs)
    assert before.shape == (4, 5) and before.dtype == np.float32
    model.save(tmp_path / "proxy.keras")
    restored = keras.saving.load_model(tmp_path / "proxy.keras", safe_mode=True)
    assert np.allclose(restored.predict_on_batch(inputs), before, atol=1e-5)
    assert restored.layers[-1].get_config() == head.get_config()


@pytest.mark.parametrize("build, message", [
    (lambda: ClassCentres(0), "`num_classes` must be an integer >= 1. Received: 0"),
    (lambda: ClassCentres(3, sub_centers=0), "`sub_centers` must be an integer >= 1. Received: 0"),
    (lambda: CosFace(3, scale=0), "`scale` must be > 0"),
    (lambda: CosFace(3, margin=-0.1), "`margin` must be >= 0"),
    (lambda: ProxyAnchorLoss(alpha=0), "`alpha` must be > 0"),
    (lambda: get_loss("arcface")(3, sub_centers=1.5), "`sub_centers` must be an integer"),
])
def test_errors_echo_the_value(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_batch_loss_runs_every_loss_on_a_batch_and_asks_for_the_classes():
    from embedding_net.losses import batch_loss, list_losses, loss_info

    labels, embeddings = batch(2)
    for name in list_losses("embedding"):
        loss, layer = batch_loss(name, num_classes=4)
        assert np.isfinite(float(loss(labels, embeddings.astype("float32")))), name
        assert (layer is None) == ("head" not in loss_info(name)), name
    with pytest.raises(ValueError, match="the cosface loss trains class centres: pass num_classes"):
        batch_loss("cosface")


@pytest.mark.parametrize("name", ["proxy_anchor", "cosface", "arcface"])
def test_class_centre_losses_compute_in_float32_from_half_precision(name):
    from embedding_net.losses import batch_loss

    labels, embeddings = batch(4)
    loss, layer = batch_loss(name, num_classes=4)
    full = float(loss(labels, embeddings.astype("float32")))
    half = loss(labels, tf.constant(embeddings, tf.bfloat16))
    assert layer.centers.dtype == "float32" and half.dtype == tf.float32
    assert float(half) == pytest.approx(full, rel=0.05)
