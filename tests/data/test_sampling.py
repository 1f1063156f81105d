"""The P x K sampler: batch structure, coverage, determinism, resumption, and both image sources."""

import cv2
import numpy as np
import pytest

from embedding_net.data.images import read_image
from embedding_net.data.sampling import class_table, pk_dataset, pk_index_dataset

# Class 4 has fewer images than K, class 5 has none; labels are shuffled so that a class's
# images are not contiguous.
COUNTS = [5, 6, 4, 7, 2, 0, 9, 4]
NUM_CLASSES = len(COUNTS)
P, K = 3, 4


def shuffled_labels(counts, seed=0):
    labels = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(counts)])
    return np.random.default_rng(seed).permutation(labels)


def take(dataset, n):
    return list(dataset.take(n).as_numpy_iterator())


@pytest.fixture(scope="module")
def labels():
    return shuffled_labels(COUNTS)


@pytest.fixture(scope="module")
def batches(labels):
    return take(pk_index_dataset(labels, NUM_CLASSES, P, K, seed=3), 200)


def test_class_table_lists_each_class_images(labels):
    table, counts = class_table(labels, NUM_CLASSES)
    assert counts.tolist() == COUNTS
    assert table.shape == (NUM_CLASSES, max(COUNTS))
    for c in range(NUM_CLASSES):
        assert sorted(table[c, : counts[c]].tolist()) == np.flatnonzero(labels == c).tolist()


def test_every_batch_is_p_classes_of_k_contiguous_images(labels, batches):
    for batch in batches:
        assert batch.shape == (P * K,)
        blocks = labels[batch].reshape(P, K)
        # Each block of K holds one class, and the P blocks are distinct classes.
        assert (blocks == blocks[:, :1]).all(), blocks
        assert len(set(blocks[:, 0].tolist())) == P
        for block_indices, c in zip(batch.reshape(P, K), blocks[:, 0]):
            assert (labels[block_indices] == c).all()
            if COUNTS[c] >= K:
                assert len(set(block_indices.tolist())) == K, f"repeated image in class {c}"


def test_small_class_repeats_only_its_own_images_and_covers_them(labels, batches):
    small = 4  # 2 images, K = 4
    own = set(np.flatnonzero(labels == small).tolist())
    seen = 0
    for batch in batches:
        for block in batch.reshape(P, K):
            if labels[block[0]] == small:
                seen += 1
                assert set(block.tolist()) == own
                # Two images in four slots: each exactly twice.
                assert sorted(np.bincount(block).tolist())[-2:] == [2, 2]
    assert seen > 0


def test_empty_class_never_drawn_and_classes_roughly_uniform(labels, batches):
    drawn = np.zeros(NUM_CLASSES, int)
    for batch in batches:
        for c in labels[batch].reshape(P, K)[:, 0]:
            drawn[c] += 1
    assert drawn[5] == 0
    available = [c for c, n in enumerate(COUNTS) if n > 0]
    expected = len(batches) * P / len(available)  # ~85.7, binomial std ~7
    for c in available:
        assert 0.6 * expected < drawn[c] < 1.4 * expected, drawn


def test_every_image_of_a_large_class_eventually_drawn(labels, batches):
    used = set(np.concatenate(batches).tolist())
    assert used == set(range(len(labels)))


def test_all_classes_every_batch_when_p_equals_available(labels):
    available = {c for c, n in enumerate(COUNTS) if n > 0}
    for batch in take(pk_index_dataset(labels, NUM_CLASSES, len(available), 2, seed=1), 10):
        assert set(labels[batch].tolist()) == available


def test_same_seed_same_sequence_different_seed_different(labels, batches):
    again = take(pk_index_dataset(labels, NUM_CLASSES, P, K, seed=3), 20)
    other = take(pk_index_dataset(labels, NUM_CLASSES, P, K, seed=4), 20)
    assert all((a == b).all() for a, b in zip(again, batches[:20]))
    assert not all((a == b).all() for a, b in zip(other, batches[:20]))


def test_start_batch_resumes_the_sequence(labels, batches):
    resumed = take(pk_index_dataset(labels, NUM_CLASSES, P, K, seed=3, start_batch=37), 15)
    for a, b in zip(resumed, batches[37:52]):
        np.testing.assert_array_equal(a, b)
    # And it is not just the start of the sequence again.
    assert not all((a == b).all() for a, b in zip(resumed, batches[:15]))


def test_too_many_classes_per_batch_raises_with_numbers():
    labels = np.array([0, 0, 2, 2, 4, 4])  # 3 classes with images out of 5
    with pytest.raises(ValueError) as info:
        pk_index_dataset(labels, 5, 4, 2)
    assert "4" in str(info.value) and "3" in str(info.value)
    pk_index_dataset(labels, 5, 3, 2)  # exactly the available classes is fine


# ----------------------------------------------------------------------------- images


def indexed_images(n, height=4, width=3, channels=1):
    """uint8 images whose pixels encode their own index (and position, so no two are equal)."""
    pixels = np.arange(height * width * channels).reshape(height, width, channels)
    return ((np.arange(n)[:, None, None, None] * 7 + pixels[None]) % 256).astype(np.uint8)


def test_in_memory_batches_gather_images_and_labels(labels):
    images = indexed_images(len(labels))
    indices = take(pk_index_dataset(labels, NUM_CLASSES, P, K, seed=5), 6)
    batches = take(pk_dataset(labels, NUM_CLASSES, P, K, images=images, seed=5), 6)
    for index, (batch_images, batch_labels) in zip(indices, batches):
        assert batch_images.dtype == np.uint8 and batch_images.shape == (P * K, 4, 3, 1)
        assert batch_labels.dtype == np.int32 and batch_labels.shape == (P * K,)
        np.testing.assert_array_equal(batch_images, images[index])
        np.testing.assert_array_equal(batch_labels, labels[index])


def test_paths_give_the_same_batches_as_memory(tmp_path):
    counts = [3, 2, 4, 3]
    labels = shuffled_labels(counts, seed=1)
    rng = np.random.default_rng(0)
    paths = []
    for i, label in enumerate(labels):
        name = f"ünï_字_{i}.png" if i == 0 else f"img{i}.png"
        path = tmp_path / f"c{label}" / name
        path.parent.mkdir(exist_ok=True)
        assert cv2.imwrite(str(path), rng.integers(0, 256, (8, 6), dtype=np.uint8)), path
        paths.append(str(path))
    size = (4, 3)
    images = np.stack([read_image(p, size, 1) for p in paths])
    assert len(set(images.reshape(len(images), -1).sum(axis=1).tolist())) > 1  # images differ
    from_paths = take(pk_dataset(labels, len(counts), 2, 3, paths=paths, image_size=size,
                                 channels=1, seed=9), 8)
    from_memory = take(pk_dataset(labels, len(counts), 2, 3, images=images, seed=9), 8)
    index_batches = take(pk_index_dataset(labels, len(counts), 2, 3, seed=9), 8)
    used = set()
    for (pi, pl), (mi, ml), index in zip(from_paths, from_memory, index_batches):
        assert pi.dtype == np.uint8 and pi.shape == (6, 4, 3, 1)
        assert pl.dtype == np.int32
        np.testing.assert_array_equal(pi, mi)
        np.testing.assert_array_equal(pl, ml)
        used.update(index.tolist())
    assert 0 in used, "the non-ASCII file was never read"


def test_exactly_one_image_source_required(tmp_path):
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="exactly one"):
        pk_dataset(labels, 2, 2, 2)
    with pytest.raises(ValueError, match="exactly one"):
        pk_dataset(labels, 2, 2, 2, images=indexed_images(4), paths=["a", "b", "c", "d"],
                   image_size=(4, 3))
