"""The closed-form-gradient BatchNormalization against Keras' own, value for value."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.models import normalization
from embedding_net.models.builders import build_embedding_model
from embedding_net.models.normalization import BatchNormalization

_original_normalize = normalization._normalize

CASES = [
    ((8, 5, 5, 3), {}),
    ((16, 7), {}),
    ((4, 3, 6, 6), {"axis": 1}),
    ((8, 5, 5, 3), {"center": False}),
    ((8, 5, 5, 3), {"scale": False}),
]


def _train_step(layer_class, shape, kwargs, x, upstream):
    """Output, gradients (input, then trainable weights) and moving statistics of one
    training-mode call inside a `tf.function`, as `fit` runs it."""
    layer = layer_class(momentum=0.9, epsilon=1e-5, **kwargs)
    layer.build(shape)
    if layer.scale:
        layer.gamma.assign(np.linspace(0.5, 2.0, layer.gamma.shape[0]))
    if layer.center:
        layer.beta.assign(np.linspace(-1.0, 1.0, layer.beta.shape[0]))

    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            loss = tf.reduce_sum(outputs * upstream)
        return outputs, tape.gradient(loss, [inputs] + layer.trainable_variables)

    outputs, gradients = step(tf.constant(x))
    return [outputs.numpy()] + [g.numpy() for g in gradients] + [
        layer.moving_mean.numpy(), layer.moving_variance.numpy()]


@pytest.mark.parametrize("shape,kwargs", CASES, ids=[str(c) for c in CASES])
def test_matches_keras_batch_normalization_in_training(shape, kwargs, monkeypatch):
    calls = []
    monkeypatch.setattr(normalization, "_normalize",
                        lambda *a: calls.append(1) or _original_normalize(*a))
    rng = np.random.default_rng(0)
    x = (rng.normal(size=shape) * 3.0 + 1.0).astype("float32")
    upstream = tf.constant(rng.normal(size=shape).astype("float32"))
    ours = _train_step(BatchNormalization, shape, kwargs, x, upstream)
    assert calls, "the closed-form path was not taken"
    reference = _train_step(keras.layers.BatchNormalization, shape, kwargs, x, upstream)
    assert len(ours) == len(reference)
    for mine, theirs in zip(ours, reference):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-5)



def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(6, 4)).astype("float64") * 2.0)
    layer = BatchNormalization(dtype="float64")
    layer.build((6, 4))
    weights = tf.constant(rng.normal(size=(6, 4)))

    def loss(inputs):
        return tf.reduce_sum(layer(inputs, training=True) * weights)

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(x)
    analytic = tape.gradient(value, x).numpy()
    numeric = np.zeros_like(analytic)
    step = 1e-5
    for index in np.ndindex(*analytic.shape):
        delta = np.zeros(analytic.shape)
        delta[index] = step
        numeric[index] = (loss(x + delta) - loss(x - delta)).numpy() / (2 * step)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_inference_and_frozen_use_the_moving_statistics():
    layer = BatchNormalization()
    layer.build((4, 3))
    layer.moving_mean.assign([1.0, 2.0, 3.0])
    layer.moving_variance.assign([4.0, 4.0, 4.0])
    x = np.ones((4, 3), "float32") * 5.0
    expected = (5.0 - np.array([1.0, 2.0, 3.0])) / np.sqrt(4.0 + layer.epsilon)
    np.testing.assert_allclose(layer(x, training=False).numpy()[0], expected, rtol=1e-6)
    layer.trainable = False
    np.testing.assert_allclose(layer(x, training=True).numpy()[0], expected, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_mean.numpy(), [1.0, 2.0, 3.0])


def test_mixed_precision_outputs_the_compute_dtype_and_keeps_float32_statistics():
    layer = BatchNormalization(dtype="mixed_float16")
    x = tf.constant(np.random.default_rng(2).normal(size=(8, 3)) * 300.0, "float16")
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(outputs, "float32"))
    gradient = tape.gradient(loss, x)
    assert outputs.dtype == tf.float16 and gradient.dtype == tf.float16
    assert layer.moving_variance.dtype == "float32"
    assert np.all(np.isfinite(outputs.numpy())) and np.all(np.isfinite(gradient.numpy()))
    np.testing.assert_allclose(outputs.numpy().astype("float32").mean(axis=0), 0.0, atol=1e-2)


def test_conv4_uses_it_and_round_trips_through_keras_file(tmp_path):
    model = build_embedding_model("conv4", (28, 28, 1), embedding_size=8)
    layers = [layer for layer in model.get_layer("conv4").layers if "bn" in layer.name]
    assert len(layers) == 4 and all(type(layer) is BatchNormalization for layer in layers)
    # The batch norm after each convolution cancels a bias, so the convolutions have none.
    convolutions = [layer for layer in model.get_layer("conv4").layers if "conv" in layer.name]
    assert len(convolutions) == 4 and not any(layer.use_bias for layer in convolutions)
    images = np.random.default_rng(3).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0),
                               rtol=1e-5, atol=1e-6)
