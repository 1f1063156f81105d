"""Softmax pre-training: the embedding model is trained in place and nothing of the head stays."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.models.builders import build_embedding_model
from embedding_net.training.pretraining import build_classifier_model, pretrain_classifier
from embedding_net.data.sampling import pk_dataset

NUM_CLASSES = 4


def separable_data(per_class=8, seed=0):
    """Class c is a bright 10 x 10 square in quadrant c of a noisy dark 28 x 28 image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (NUM_CLASSES * per_class, 28, 28, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int32), per_class)
    for image, label in zip(images, labels):
        row, column = 2 + 14 * (label // 2), 2 + 14 * (label % 2)
        image[row:row + 10, column:column + 10] = 255
    return images, labels


def dataset_of(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(len(labels), seed=0).repeat().batch(16)


def model_description(model):
    return [layer.name for layer in model.layers], json.dumps(model.get_config(), sort_keys=True, default=str)


def test_pretraining_trains_the_tower_in_place_and_drops_the_head(tmp_path):
    keras.utils.set_random_seed(0)
    images, labels = separable_data()
    model = build_embedding_model("conv4", (28, 28, 1), embedding_size=16)
    description = model_description(model)
    before = [w.numpy().copy() for w in model.weights]

    history = pretrain_classifier(model, dataset_of(images, labels), NUM_CLASSES, epochs=4, steps_per_epoch=4,
                                  learning_rate=3e-3)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]

    after = [w.numpy() for w in model.weights]
    assert len(after) == len(before)
    changed = [not np.array_equal(b, a) for b, a in zip(before, after)]
    trainable = {id(w) for w in model.trainable_weights}
    # Every trainable weight of the tower moved (the projection and the convolutions alike).
    assert all(c for c, w in zip(changed, model.weights) if id(w) in trainable)
    assert model_description(model) == description
    assert not model.compiled

    embeddings = model.predict(images, verbose=0)
    path = str(tmp_path / "pretrained.keras")
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        saved_config = archive.read("config.json").decode()
    assert "classification_head" not in saved_config and "ArcFace" not in saved_config
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert model_description(reloaded)[0] == description[0] and len(reloaded.weights) == len(before)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), embeddings, atol=1e-5)


def test_frozen_tower_stays_frozen():
    keras.utils.set_random_seed(1)
    images, labels = separable_data(per_class=4)
    model = build_embedding_model("conv4", (28, 28, 1), embedding_size=8, freeze="all")
    tower = [layer for layer in model.layers if isinstance(layer, keras.Model)][0]
    tower_before = [w.numpy().copy() for w in tower.weights]
    projection_before = model.get_layer("projection").kernel.numpy().copy()
    pretrain_classifier(model, pk_dataset(labels, NUM_CLASSES, 2, 2, images=images), NUM_CLASSES,
                        epochs=1, steps_per_epoch=2)
    for before, weight in zip(tower_before, tower.weights):
        np.testing.assert_array_equal(weight.numpy(), before)
    assert not np.array_equal(model.get_layer("projection").kernel.numpy(), projection_before)


def test_classifier_model_shares_the_embedding_model():
    model = build_embedding_model("conv4", (28, 28, 1), embedding_size=8)
    classifier = build_classifier_model(model, 5, scale=10.0)
    assert classifier.get_layer(model.name) is model
    head = classifier.get_layer("classification_head")
    assert (head.num_classes, head.scale, head.margin) == (5, 10.0, 0.0)
    images, _ = separable_data(per_class=1)
    logits = classifier.predict(images, verbose=0)
    centers = head.centers.numpy() / np.linalg.norm(head.centers.numpy(), axis=0)
    np.testing.assert_allclose(logits, 10.0 * model.predict(images, verbose=0) @ centers, atol=1e-4)


@pytest.mark.parametrize("argument, value", [("num_classes", 1), ("epochs", 0), ("steps_per_epoch", 1.5),
                                             ("learning_rate", 0.0)])
def test_bad_arguments_echo_the_value(argument, value):
    model = build_embedding_model("conv4", (28, 28, 1), embedding_size=4)
    kwargs = {"num_classes": 3, "epochs": 1, "steps_per_epoch": 1, argument: value}
    with pytest.raises(ValueError, match=f"`{argument}`.*Received: {value!r}"):
        pretrain_classifier(model, None, **kwargs)
