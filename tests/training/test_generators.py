"""Pair and triplet generators: batch contents, the mining rules recomputed from the model's
embeddings, the live model (restored weights are used), reproducibility, and training."""

import keras
import numpy as np
import pytest

from embedding_net.mining.registry import list_minings
from embedding_net.data.folders import ImageFolder
from embedding_net.mining.distances import pairwise_distances
from embedding_net.training.generators.pairs import PairGenerator
from embedding_net.training.generators.triplets import TripletGenerator
from embedding_net.losses.contrastive import ContrastiveLoss
from embedding_net.losses.triplet import TripletMarginLoss
from embedding_net.models.builders import build_embedding_model
from embedding_net.models.architectures import build_siamese_model, build_triplet_model

SHAPE = (28, 28, 1)
RNG = np.random.default_rng(0)
# 12 classes of 5 images and one class of a single image (never drawn for P x K or positives).
LABELS = np.concatenate([np.repeat(np.arange(12), 5), [12]]).astype("int32")
# Each class a noisy version of its own pattern, so that embeddings of a class are related.
PATTERNS = RNG.integers(0, 256, (13, *SHAPE))
IMAGES = np.clip(PATTERNS[LABELS] + RNG.normal(0, 60, (len(LABELS), *SHAPE)), 0, 255).astype("uint8")


@pytest.fixture(scope="module")
def tower():
    keras.utils.set_random_seed(1)
    return build_embedding_model("conv4", SHAPE, 8)


def embed_distances(model, indices, distance="euclidean"):
    """Distances between the embeddings of `IMAGES[indices]`, computed as the generators do."""
    embeddings = model(IMAGES[indices], training=False)
    return keras.ops.convert_to_numpy(pairwise_distances(embeddings, distance))


def triplets(tower, mode, margin=0.2, distance="euclidean", **kwargs):
    kwargs = {"batch_size": 16, "steps_per_epoch": 3, "classes_per_batch": 4, "images_per_class": 4, "seed": 3, **kwargs}
    return TripletGenerator(IMAGES, LABELS, tower, mining=mode, margin=margin,
                            distance=distance, **kwargs)


def position(batch, index):
    """Where dataset image `index` sits in the P x K draw (images are drawn without repetition)."""
    return int(np.flatnonzero(batch == index)[0])


# Pairs.

@pytest.mark.parametrize("batch_size", [16, 7])
def test_random_pairs_are_balanced_and_labelled(batch_size):
    generator = PairGenerator(IMAGES, LABELS, batch_size=batch_size, steps_per_epoch=4, seed=1)
    assert len(generator) == 4
    for index in range(len(generator)):
        (first, second), pair_labels = generator[index]
        assert first.shape == second.shape == (batch_size, *SHAPE)
        assert first.dtype == second.dtype == np.uint8
        assert pair_labels.shape == (batch_size,) and pair_labels.dtype == np.float32
        # Pair label 1 = same class; half positives (an odd batch has one more negative pair).
        assert pair_labels.sum() == batch_size // 2
        selection = generator.select(index)
        np.testing.assert_array_equal(first, IMAGES[selection.first])
        np.testing.assert_array_equal(second, IMAGES[selection.second])
        same = LABELS[selection.first] == LABELS[selection.second]
        np.testing.assert_array_equal(same, pair_labels == 1)
        positive = pair_labels == 1
        assert np.all(selection.first[positive] != selection.second[positive])  # two distinct images


def test_hard_pairs_are_the_hardest_of_the_pool(tower):
    generator = PairGenerator(IMAGES, LABELS, batch_size=10, steps_per_epoch=2, mining="hard",
                              embedding_model=tower, classes_per_batch=4, images_per_class=4, seed=2)
    for index in range(2):
        selection = generator.select(index)
        (first, second), pair_labels = generator[index]
        assert first.shape == (10, *SHAPE) and first.dtype == np.uint8
        assert pair_labels.sum() == 5
        pool = selection.pool
        distances = embed_distances(tower, pool)
        pool_labels = LABELS[pool]
        pairs = [(i, j) for i in range(len(pool)) for j in range(i + 1, len(pool))]
        same_class = [pool_labels[i] == pool_labels[j] for i, j in pairs]
        positive = sorted((distances[ij] for ij, same in zip(pairs, same_class) if same), reverse=True)
        negative = sorted(distances[ij] for ij, same in zip(pairs, same_class) if not same)
        chosen = [distances[position(pool, a), position(pool, b)]
                  for a, b in zip(selection.first, selection.second)]
        same = LABELS[selection.first] == LABELS[selection.second]
        np.testing.assert_array_equal(same, pair_labels == 1)
        np.testing.assert_allclose(sorted(np.array(chosen)[same], reverse=True), positive[:5], rtol=1e-6)
        np.testing.assert_allclose(sorted(np.array(chosen)[~same]), negative[:5], rtol=1e-6)
        assert len(set(zip(selection.first, selection.second))) == 10  # no pair twice


# Triplets.

def check_triplet_batch(generator, tower, index):
    """Checks one batch against the rule recomputed from the model's embeddings; returns it."""
    (anchors, positives, negatives), targets = generator[index]
    selection = generator.select(index)
    size = generator.batch_size
    for images, indices in zip((anchors, positives, negatives), selection[:3]):
        assert images.shape == (size, *SHAPE) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, IMAGES[indices])
    assert targets.shape == (size,)
    assert np.all(LABELS[selection.anchors] == LABELS[selection.positives])
    assert np.all(selection.anchors != selection.positives)
    assert np.all(LABELS[selection.anchors] != LABELS[selection.negatives])
    assert len(set(zip(selection.anchors, selection.positives))) == size  # each pair once

    batch = selection.batch
    assert len(batch) == generator.classes_per_batch * generator.images_per_class
    assert len(set(LABELS[batch])) == generator.classes_per_batch
    distances = embed_distances(tower, batch, generator.distance)
    margin = np.float32(generator.margin)
    in_batch = np.vectorize(lambda i: position(batch, i))
    for a, p, n, qualified, value in zip(*(in_batch(x) for x in selection[:3]),
                                         selection.qualified, selection.values):
        batch_negatives = [m for m in range(len(batch)) if LABELS[batch[m]] != LABELS[batch[a]]]
        values = {m: (distances[a, p] - distances[a, m]) + margin for m in batch_negatives}
        assert value == pytest.approx(values[n], abs=1e-6)
        mode = generator.mining
        if not qualified:
            assert mode != "random"
            assert values[n] == pytest.approx(max(values.values()), abs=1e-6)  # its hardest negative
        elif mode == "hard":
            assert values[n] > 0 and values[n] == pytest.approx(max(values.values()), abs=1e-6)
        elif mode == "random_hard":
            assert values[n] > 0
        elif mode == "semi_hard":
            assert 0 < distances[a, n] - distances[a, p] < margin
    return selection, distances


@pytest.mark.parametrize("mode", list_minings("triplets"))
@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_triplets_follow_the_rule(tower, mode, distance):
    # Margins small against the untrained tower's distances (euclidean about 0.03 to 0.2), draws
    # of 2 classes (few negatives) and 20 of the 24 pairs of a draw per batch, so that some pairs
    # qualify and some are filled in.
    margin = 0.0002 if distance == "cosine" else 0.005
    generator = triplets(tower, mode, margin=margin, distance=distance, batch_size=20, classes_per_batch=2)
    qualified = filled = 0
    for index in range(3):
        selection, _ = check_triplet_batch(generator, tower, index)
        qualified += selection.qualified.sum()
        filled += (~selection.qualified).sum()
    assert qualified > 0
    assert filled > 0 or mode == "random"  # every pair qualifies under `random`


def test_more_qualified_than_batch_size_takes_a_random_subset(tower):
    generator = triplets(tower, "random", batch_size=12)
    selection, _ = check_triplet_batch(generator, tower, 0)
    assert selection.qualified.all()  # 48 pairs all qualify under `random`
    # Not the first 12 pairs in batch order (those are the 12 pairs of the draw's first class):
    # 12 pairs drawn from 48, 12 per class, fall in a single class with probability ~1e-10.
    for index in range(3):
        assert len(set(LABELS[generator.select(index).anchors])) > 1


def test_fewer_qualified_are_filled_with_the_hardest_rest(tower):
    # A tiny semi-hard window: few of the 48 pairs of a 4 x 4 draw qualify, far fewer than 40.
    generator = triplets(tower, "semi_hard", margin=0.002, batch_size=40)
    selection, distances = check_triplet_batch(generator, tower, 0)
    count = int(selection.qualified.sum())
    assert count < 40
    assert selection.qualified[:count].all() and not selection.qualified[count:].any()
    # The fill: the unqualified pairs of largest hardest value, i.e. none left out is harder.
    batch = selection.batch
    labels = LABELS[batch]
    hardest_value = {}
    for a in range(len(batch)):
        for p in range(len(batch)):
            if a != p and labels[a] == labels[p]:
                hardest_value[(a, p)] = max(distances[a, p] - distances[a, m] + np.float32(0.002)
                                            for m in range(len(batch)) if labels[m] != labels[a])
    used = {(position(batch, a), position(batch, p)) for a, p in zip(selection.anchors, selection.positives)}
    filled = [value for value, qualified in zip(selection.values, selection.qualified) if not qualified]
    left_out = [value for pair, value in hardest_value.items() if pair not in used]
    assert len(filled) == 40 - count and left_out
    assert min(filled) >= max(left_out) - 1e-6


def test_mining_uses_the_weights_in_the_model_now(tower):
    """Weights restored into the model (as a checkpoint restores them) are the ones mined with."""
    keras.utils.set_random_seed(7)
    other = build_embedding_model("conv4", SHAPE, 8)
    model = build_embedding_model("conv4", SHAPE, 8)
    model.set_weights(tower.get_weights())
    generator = triplets(model, "hard")
    before = generator.select(1)
    model.set_weights(other.get_weights())
    after = generator.select(1)
    expected = triplets(other, "hard").select(1)
    for got, want in zip(after, expected):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(after.batch, before.batch)  # same draw, different mining
    assert not np.array_equal(after.negatives, before.negatives)


# Both generators.

def test_batches_are_reproducible_with_a_seed(tower):
    for make in (lambda seed: PairGenerator(IMAGES, LABELS, batch_size=8, seed=seed),
                 lambda seed: triplets(tower, "random_hard", seed=seed)):
        first, again, other = make(4), make(4), make(5)
        np.testing.assert_array_equal(first[2][0][0], again[2][0][0])
        assert not np.array_equal(first[2][0][0], other[2][0][0])
        assert not np.array_equal(first[1][0][0], first[2][0][0])
        # A new epoch draws new batches.
        before = first[0][0][0]
        first.on_epoch_begin()  # the first epoch begins: still epoch 0
        np.testing.assert_array_equal(first[0][0][0], before)
        first.on_epoch_begin()
        assert first.epoch == 1 and not np.array_equal(first[0][0][0], before)


def test_from_folder_and_augment(tower):
    folder = ImageFolder("root", [f"{i}.png" for i in range(len(LABELS))], LABELS,
                         [f"class{c}" for c in range(13)])
    plain = triplets(tower, "semi_hard")
    inverted = TripletGenerator.from_folder(folder, IMAGES, embedding_model=tower, batch_size=16,
                                            steps_per_epoch=3, classes_per_batch=4, images_per_class=4, seed=3,
                                            mining="semi_hard", margin=0.2,
                                            augment=lambda images: 255 - images)
    (anchors, positives, negatives), _ = inverted[0]
    selection = plain.select(0)  # augmentation comes after mining: the same triplets
    np.testing.assert_array_equal(anchors, 255 - IMAGES[selection.anchors])
    np.testing.assert_array_equal(negatives, 255 - IMAGES[selection.negatives])
    pairs = PairGenerator.from_folder(folder, IMAGES, batch_size=6, augment=lambda images: images // 2)
    (first, _), _ = pairs[0]
    np.testing.assert_array_equal(first, IMAGES[pairs.select(0).first] // 2)
    with pytest.raises(ValueError, match="one image per path"):
        PairGenerator.from_folder(folder, IMAGES[:5])


def test_bad_arguments_are_echoed(tower):
    cases = [
        (lambda: triplets(tower, "semihard"), "'semihard'"),
        (lambda: triplets(tower, "hard", batch_size=49), "Received: 49"),
        (lambda: triplets(tower, "hard", classes_per_batch=13), "(13)"),
        (lambda: triplets(tower, "hard", distance="l2"), "'l2'"),
        (lambda: PairGenerator(IMAGES, LABELS, mining="hardest"), "'hardest'"),
        (lambda: PairGenerator(IMAGES, LABELS, mining="hard"), "embedding_model"),
        (lambda: PairGenerator(IMAGES, LABELS, batch_size=100, mining="hard", embedding_model=tower,
                               classes_per_batch=2, images_per_class=2), "fewer than"),
        (lambda: PairGenerator(IMAGES.astype("float32"), LABELS), "float32"),
        (lambda: PairGenerator(IMAGES, LABELS[:-1]), "shape (60,)"),
    ]
    for make, text in cases:
        with pytest.raises(ValueError) as info:
            make()
        assert text in str(info.value), str(info.value)


# Training.

def test_triplet_margin_loss_matches_the_mining_distances():
    rng = np.random.default_rng(0)
    stacked = rng.normal(size=(5, 3, 4)).astype("float32")
    for distance in ("euclidean", "squared_euclidean", "cosine"):
        loss = TripletMarginLoss(margin=0.3, distance=distance, reduction=None)
        got = keras.ops.convert_to_numpy(loss(np.zeros(5, "float32"), stacked))
        for i in range(5):
            d = keras.ops.convert_to_numpy(pairwise_distances(stacked[i], distance))
            assert got[i] == pytest.approx(max(d[0, 1] - d[0, 2] + 0.3, 0.0), abs=1e-5)
        restored = TripletMarginLoss.from_config(loss.get_config())
        assert (restored.margin, restored.distance) == (0.3, distance)
    # By hand: a = 0, p = 3 e1, n = 4 e1: max(3 - 4 + 0.3, 0) = 0; with n = 2 e1: 1.3.
    a, p = np.zeros(4, "float32"), np.array([3, 0, 0, 0], "float32")
    both = np.stack([np.stack([a, p, 4 * p / 3]), np.stack([a, p, 2 * p / 3])])
    value = TripletMarginLoss(margin=0.3)(np.zeros(2, "float32"), both)
    assert float(value) == pytest.approx((0.0 + 1.3) / 2, abs=1e-6)


def test_siamese_model_trains_on_hard_pairs():
    keras.utils.set_random_seed(2)
    tower = build_embedding_model("conv4", SHAPE, 8)
    generator = PairGenerator(IMAGES, LABELS, batch_size=8, steps_per_epoch=3, mining="hard",
                              embedding_model=tower, classes_per_batch=4, images_per_class=2, seed=0)
    siamese = build_siamese_model(tower)
    siamese.compile(optimizer="adam", loss=ContrastiveLoss(margin=1.0))
    history = siamese.fit(generator, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert generator.epoch == 1


def test_triplet_model_trains_on_mined_triplets():
    keras.utils.set_random_seed(3)
    tower = build_embedding_model("conv4", SHAPE, 8)
    generator = triplets(tower, "semi_hard", steps_per_epoch=3)
    model = build_triplet_model(tower)
    model.compile(optimizer="adam", loss=TripletMarginLoss(margin=0.2))
    history = model.fit(generator, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
