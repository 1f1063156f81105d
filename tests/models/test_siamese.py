"""Siamese and triplet models: shared towers, heads, training, safe round trips."""

import keras
import numpy as np
import pytest

from embedding_net.models.layers import PairDistance
from embedding_net.losses.contrastive import ContrastiveLoss
from embedding_net.models.builders import build_embedding_model, load_embedding_model
from embedding_net.models.architectures import build_siamese_model, build_triplet_model

RNG = np.random.default_rng(0)
FIRST = RNG.integers(0, 256, (6, 16, 16, 1)).astype("uint8")
SECOND = RNG.integers(0, 256, (6, 16, 16, 1)).astype("uint8")
SAME = np.array([1, 0, 1, 0, 1, 0], "float32")  # pair label 1 = same class


def tower():
    return build_embedding_model("conv4", (16, 16, 1), 8)


def test_euclidean_head_outputs_the_distance_between_shared_embeddings():
    embedding = tower()
    siamese = build_siamese_model(embedding, "euclidean")
    expected = np.linalg.norm(embedding.predict(FIRST, verbose=0) - embedding.predict(SECOND, verbose=0), axis=1)
    np.testing.assert_allclose(siamese.predict([FIRST, SECOND], verbose=0)[:, 0], expected, atol=1e-5)
    same_image = siamese.predict([FIRST, FIRST], verbose=0)
    np.testing.assert_allclose(same_image, 0.0, atol=1e-3)
    # One tower: the Siamese model has exactly the tower's weights.
    assert len(siamese.weights) == len(embedding.weights)


@pytest.mark.parametrize("head, loss", [("euclidean", ContrastiveLoss(margin=1.0)), ("l1", "binary_crossentropy")])
def test_siamese_trains_and_round_trips_in_safe_mode(tmp_path, head, loss):
    siamese = build_siamese_model(tower(), head)
    siamese.compile(optimizer="adam", loss=loss)
    history = siamese.fit([FIRST, SECOND], SAME, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    output = siamese.predict([FIRST, SECOND], verbose=0)
    assert output.shape == (6, 1)
    if head == "l1":
        assert np.all((output >= 0) & (output <= 1))
    path = str(tmp_path / f"siamese_{head}.keras")
    siamese.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(reloaded.predict([FIRST, SECOND], verbose=0), output, atol=1e-5)


def test_triplet_model_stacks_three_embeddings_of_one_tower(tmp_path):
    embedding = tower()
    triplet = build_triplet_model(embedding)
    third = RNG.integers(0, 256, (6, 16, 16, 1)).astype("uint8")
    stacked = triplet.predict([FIRST, SECOND, third], verbose=0)
    assert stacked.shape == (6, 3, 8)
    np.testing.assert_allclose(stacked[:, 2], embedding.predict(third, verbose=0), atol=1e-6)
    assert len(triplet.weights) == len(embedding.weights)
    path = str(tmp_path / "triplet.keras")
    triplet.save(path)
    np.testing.assert_allclose(load_embedding_model(path).predict([FIRST, SECOND, third], verbose=0), stacked, atol=1e-6)


def test_pair_distance_checks_its_head():
    with pytest.raises(ValueError, match="'cosine'"):
        PairDistance("cosine")
    layer = PairDistance("l1")
    assert PairDistance.from_config(layer.get_config()).head == "l1"
