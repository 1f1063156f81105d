"""The matrix-product kernel gradient of `models.convolution.Conv2D` against Keras' `Conv2D`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.models import convolution
from embedding_net.models.builders import build_embedding_model
from embedding_net.models.convolution import Conv2D

# (input height, width, channels), kernel, stride, padding: odd and even sizes, the strided
# `valid` windows that drop the last row, 1x1 projections and the 7x7 stem.
CASES = [
    ((4, 5, 6), 3, 1, "same"),
    ((5, 5, 6), 3, 2, "same"),
    ((4, 6, 6), 3, 2, "same"),
    ((6, 6, 4), 3, 2, "valid"),
    ((7, 8, 4), 3, 2, "valid"),
    ((5, 5, 8), 1, 2, "valid"),
    ((3, 3, 8), 1, 1, "valid"),
    ((9, 9, 2), 7, 2, "valid"),
]


def _forward_and_gradients(layer, x, upstream):
    @tf.function
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
            loss = tf.reduce_sum(tf.cast(outputs, "float32") * upstream)
        return [outputs] + tape.gradient(loss, [inputs, layer.kernel])

    return [t.numpy().astype("float32") for t in step(tf.constant(x))]


@pytest.mark.parametrize("shape,kernel,stride,padding", CASES, ids=[str(c) for c in CASES])
def test_matches_keras_convolution_value_and_gradients(shape, kernel, stride, padding, monkeypatch):
    monkeypatch.setattr(convolution, "MATMUL_GRADIENT_MAX_CELLS_DEFAULT", 1 << 30)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, *shape)).astype("float32")
    ours = Conv2D(5, kernel, strides=stride, padding=padding, use_bias=True)
    reference = keras.layers.Conv2D(5, kernel, strides=stride, padding=padding, use_bias=True)
    for layer in (ours, reference):
        layer.build(x.shape)
    reference.set_weights(ours.get_weights())
    assert ours._matmul_gradient(x.shape), "the matrix-product path was not taken"
    upstream = tf.constant(rng.normal(size=ours.compute_output_shape(x.shape)).astype("float32"))
    for mine, theirs in zip(_forward_and_gradients(ours, x, upstream), _forward_and_gradients(reference, x, upstream)):
        assert mine.shape == theirs.shape
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)


def test_bfloat16_gradient_matches_float32_to_bfloat16_precision(monkeypatch):
    monkeypatch.setattr(convolution, "MATMUL_GRADIENT_MAX_CELLS", {"bfloat16": 1 << 30})
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 4, 4, 32)).astype("float32")
    ours = Conv2D(16, 3, padding="same", use_bias=False, dtype="mixed_bfloat16")
    reference = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)
    for layer in (ours, reference):
        layer.build(x.shape)
    reference.set_weights(ours.get_weights())
    upstream = tf.constant(rng.normal(size=(8, 4, 4, 16)).astype("float32"))
    mine = _forward_and_gradients(ours, x, upstream)[2]
    theirs = _forward_and_gradients(reference, x, upstream)[2]
    scale = np.abs(theirs).max()
    np.testing.assert_allclose(mine / scale, theirs / scale, atol=2e-2)


@pytest.mark.parametrize("dtype,side,expected", [
    ("float32", 2, True), ("float32", 4, False), ("mixed_bfloat16", 4, True), ("mixed_bfloat16", 8, False)])
def test_small_maps_take_the_matrix_product_by_compute_dtype(dtype, side, expected):
    layer = Conv2D(4, 3, padding="same", dtype=dtype)
    assert layer._matmul_gradient((None, side, side, 3)) is expected


def test_unknown_spatial_size_dilation_and_channels_first_keep_keras_path():
    assert not Conv2D(4, 3)._matmul_gradient((None, None, None, 3))
    assert not Conv2D(4, 3, dilation_rate=2)._matmul_gradient((None, 5, 5, 3))
    assert not Conv2D(4, 3, data_format="channels_first")._matmul_gradient((None, 3, 3, 3))


def test_resnet18_uses_it_and_reloads_in_safe_mode(tmp_path):
    model = build_embedding_model("resnet18", (64, 64, 1), 8)
    convolutions = [layer for layer in model.get_layer("resnet18").layers if isinstance(layer, keras.layers.Conv2D)]
    assert convolutions and all(type(layer) is Conv2D for layer in convolutions)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1), dtype=np.uint8)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
