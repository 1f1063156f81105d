"""ArcFace: logits against a NumPy reference of the formula, finite gradients at cos = +-1,
serialisation, and training the two-input model on tf.data batches."""

import json
import math
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.losses.arcface import ArcFace, arcface_batches, arcface_inputs, build_arcface_model
from embedding_net.models.builders import build_embedding_model
from embedding_net.data.sampling import pk_dataset

D, C = 6, 5


def reference_logits(embeddings, centers, labels, scale, margin, easy_margin, epsilon, training):
    """Element by element in float64, through arccos (the layer uses the cos/sin identity)."""
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    w = centers / np.linalg.norm(centers, axis=0, keepdims=True)
    logits = np.zeros((len(e), w.shape[1]))
    for i in range(len(e)):
        for c in range(w.shape[1]):
            cosine = np.clip(float(e[i] @ w[:, c]), -1 + epsilon, 1 - epsilon)
            value = cosine
            if training and c == labels[i]:
                theta = math.acos(cosine)
                if easy_margin:
                    value = math.cos(theta + margin) if cosine > 0 else cosine
                elif theta + margin < math.pi:
                    value = math.cos(theta + margin)
                else:  # past pi: cos theta - m sin(pi - m), the reference implementation's `mm`
                    value = cosine - margin * math.sin(math.pi - margin)
            logits[i, c] = scale * value
    return logits


def batch_with_extremes(seed=0):
    """Random unnormalised embeddings and centres, plus rows at angle 0 and pi from their own
    centre, so that every branch of the formula is taken."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(D, C)).astype(np.float32)
    embeddings = rng.normal(size=(12, D)).astype(np.float32) * 3.0
    labels = rng.integers(0, C, 12).astype(np.int32)
    embeddings[0], labels[0] = 2.0 * centers[:, 1], 1   # cos = 1 with its own centre
    embeddings[1], labels[1] = -0.5 * centers[:, 2], 2  # cos = -1 with its own centre
    embeddings[2], labels[2] = -(centers[:, 3] + 0.3 * centers[:, 0]), 3  # theta close to pi
    return embeddings, centers, labels


def built_layer(centers, **kwargs):
    layer = ArcFace(C, **kwargs)
    layer.build((None, D))
    layer.centers.assign(centers)
    return layer


@pytest.mark.parametrize("margin", [0.0, 0.3, 0.5, 1.2])
@pytest.mark.parametrize("easy_margin", [False, True])
def test_logits_match_reference(margin, easy_margin):
    embeddings, centers, labels = batch_with_extremes()
    layer = built_layer(centers, scale=16.0, margin=margin, easy_margin=easy_margin, epsilon=1e-6)
    for training in (True, False):
        expected = reference_logits(embeddings.astype(np.float64), centers.astype(np.float64), labels,
                                    16.0, margin, easy_margin, 1e-6, training)
        logits = keras.ops.convert_to_numpy(layer(embeddings, labels, training=training))
        assert logits.dtype == np.float32 and logits.shape == (12, C)
        np.testing.assert_allclose(logits, expected, atol=2e-4)
    # Without labels, training or not: plain scaled cosines.
    plain = reference_logits(embeddings.astype(np.float64), centers.astype(np.float64), labels,
                             16.0, margin, easy_margin, 1e-6, False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(embeddings, training=True)), plain, atol=2e-4)


def test_reference_batch_takes_every_branch():
    embeddings, centers, labels = batch_with_extremes()
    e = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    w = centers / np.linalg.norm(centers, axis=0, keepdims=True)
    own = np.arccos(np.clip((e * w[:, labels].T).sum(axis=1), -1, 1))
    assert (own + 0.5 > math.pi).any() and (own + 0.5 < math.pi).any()  # fallback and main branch
    assert (own > math.pi / 2).any() and (own < math.pi / 2).any()      # both sides of easy_margin


def test_margin_lowers_only_the_true_class_logit():
    embeddings, centers, labels = batch_with_extremes(seed=3)
    layer = built_layer(centers, margin=0.5)
    train = keras.ops.convert_to_numpy(layer(embeddings, labels, training=True))
    infer = keras.ops.convert_to_numpy(layer(embeddings, labels, training=False))
    true_class = np.eye(C, dtype=bool)[labels]
    np.testing.assert_array_equal(train[~true_class], infer[~true_class])
    assert (train[true_class] < infer[true_class]).all()


@pytest.mark.parametrize("easy_margin", [False, True])
def test_gradients_finite_at_cosine_plus_and_minus_one(easy_margin):
    embeddings, centers, labels = batch_with_extremes()
    layer = built_layer(centers, margin=0.5, easy_margin=easy_margin)
    x = tf.Variable(embeddings)
    with tf.GradientTape() as tape:
        logits = layer(x, labels, training=True)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    gradients = tape.gradient(loss, [x, layer.centers])
    assert np.isfinite(float(loss))
    for gradient in gradients:
        assert np.isfinite(gradient.numpy()).all()
    assert np.abs(gradients[1].numpy()).sum() > 0


def test_float32_under_mixed_precision():
    embeddings, centers, labels = batch_with_extremes()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        layer = ArcFace(C)
        logits = layer(embeddings.astype(np.float16), labels, training=True)
    finally:
        keras.config.set_dtype_policy(previous)
    assert logits.dtype == "float32" and layer.centers.dtype == "float32"


def test_config_round_trip_and_bad_arguments():
    layer = ArcFace(7, scale=12.0, margin=0.25, easy_margin=True, epsilon=1e-5, name="head")
    clone = ArcFace.from_config(layer.get_config())
    assert (clone.num_classes, clone.scale, clone.margin, clone.easy_margin, clone.epsilon, clone.name) == (
        7, 12.0, 0.25, True, 1e-5, "head")
    for kwargs, received in [({"num_classes": 0}, "0"), ({"num_classes": 2.5}, "2.5"),
                             ({"num_classes": 3, "scale": -1.0}, "-1.0"),
                             ({"num_classes": 3, "margin": 4.0}, "4.0"),
                             ({"num_classes": 3, "epsilon": 0.0}, "0.0")]:
        with pytest.raises(ValueError, match=f"Received: {received}"):
            ArcFace(**kwargs)


# ----------------------------------------------------------------------------- training model


def tiny_data(n_classes=4, per_class=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n_classes * per_class, 28, 28, 1), dtype=np.uint8)
    return images, np.repeat(np.arange(n_classes, dtype=np.int32), per_class)


def test_fit_reduces_loss_and_models_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = tiny_data()
    embedding_model = build_embedding_model("conv4", (28, 28, 1), embedding_size=16)
    model = build_arcface_model(embedding_model, num_classes=4, scale=16.0, margin=0.3)
    assert [tensor.name for tensor in model.inputs] == ["image", "label"]
    assert model.get_layer(embedding_model.name) is embedding_model
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = arcface_batches(tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(16))
    history = model.fit(dataset, epochs=4, steps_per_epoch=5, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses

    logits = model.predict((images, labels), verbose=0)
    path = str(tmp_path / "arcface.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(reloaded.predict((images, labels), verbose=0), logits, atol=1e-5)
    layer = reloaded.get_layer("arcface")
    assert isinstance(layer, ArcFace) and (layer.num_classes, layer.scale, layer.margin) == (4, 16.0, 0.3)
    # Inference logits: the scaled cosines of the embeddings with the centres.
    centers = layer.centers.numpy() / np.linalg.norm(layer.centers.numpy(), axis=0)
    np.testing.assert_allclose(logits, 16.0 * embedding_model.predict(images, verbose=0) @ centers, atol=1e-4)

    # The tower is what is kept: alone, it saves without the head and reloads in safe mode.
    embeddings = embedding_model.predict(images, verbose=0)
    tower_path = str(tmp_path / "embedding.keras")
    reloaded.get_layer(embedding_model.name).save(tower_path)
    with zipfile.ZipFile(tower_path) as archive:
        assert "ArcFace" not in json.dumps(json.loads(archive.read("config.json")))
    tower = keras.saving.load_model(tower_path, safe_mode=True)
    np.testing.assert_allclose(tower.predict(images, verbose=0), embeddings, atol=1e-5)


def test_arcface_batches_over_pk_dataset():
    images, labels = tiny_data(n_classes=5, per_class=3)
    dataset = arcface_batches(pk_dataset(labels, 5, classes_per_batch=3, images_per_class=2, images=images))
    (batch_images, batch_labels), targets = next(iter(dataset))
    assert tuple(batch_images.shape) == (6, 28, 28, 1) and batch_images.dtype == tf.uint8
    np.testing.assert_array_equal(batch_labels.numpy(), targets.numpy())
    assert arcface_inputs("x", "y") == (("x", "y"), "y")
    keras.utils.set_random_seed(1)
    model = build_arcface_model(build_embedding_model("conv4", (28, 28, 1), embedding_size=8), 5)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(dataset, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
