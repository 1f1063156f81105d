"""Albumentations presets and YAML transforms, batch augmentation, and the tf.data pipeline."""

import threading

import albumentations as A
import numpy as np
import pytest
import tensorflow as tf

from embedding_net.data.presets import list_augmentations
from embedding_net.data.augmentation import (
    BatchAugmenter,
    augment_dataset,
    build_augmentation,
    build_transform,
    list_transforms,
)
from embedding_net.data.sampling import pk_dataset


def character_batch(n=8, channels=1, size=28, seed=0):
    """Dark strokes on white paper, like Omniglot: random horizontal and vertical bars."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, channels), 255, np.uint8)
    for image in images:
        for _ in range(3):
            a, b = sorted(rng.integers(4, size - 4, 2))
            at = rng.integers(4, size - 4)
            image[at:at + 2, a:b + 2] = rng.integers(0, 60, channels)
            image[a:b + 2, at:at + 2] = rng.integers(0, 60, channels)
    return images


def photo_batch(n=8, channels=3, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


# ----------------------------------------------------------------------------- building


def test_presets_build():
    assert build_augmentation("none") is None
    for preset in ("light", "default"):
        augmentation = build_augmentation(preset, seed=0)
        assert isinstance(augmentation, A.Compose) and len(augmentation.transforms) >= 1
    assert set(list_augmentations()) == {"none", "light", "default"}
    with pytest.raises(ValueError, match="`preset` must be one of default, light, none. Received: 'heavy'"):
        build_augmentation("heavy")


def test_transforms_are_appended_after_the_preset_with_lists_as_tuples():
    transforms = [{"name": "Affine", "rotate": [-10, 10], "p": 0.5}, {"name": "HorizontalFlip", "p": 1.0}]
    light = build_augmentation("light").transforms
    augmentation = build_augmentation("light", transforms)
    names = [type(t).__name__ for t in augmentation.transforms]
    assert names == [type(t).__name__ for t in light] + ["Affine", "HorizontalFlip"]
    assert augmentation.transforms[len(light)].rotate == (-10.0, 10.0)
    assert augmentation.transforms[-1].p == 1.0
    only = build_augmentation("none", [{"name": "VerticalFlip", "p": 1.0}])
    assert [type(t).__name__ for t in only.transforms] == ["VerticalFlip"]
    np.testing.assert_array_equal(only(image=photo_batch(1)[0])["image"], photo_batch(1)[0][::-1])


@pytest.mark.parametrize("spec, pieces", [
    ({"name": "Afine"}, ["'Afine'", "not an albumentations transform", "Affine"]),
    ({"name": "horizontalflip"}, ["'horizontalflip'", "HorizontalFlip"]),
    ({"name": "Compose"}, ["'Compose'", "not an albumentations transform"]),
    ({"name": "NoSuchThingAtAll"}, ["'NoSuchThingAtAll'", "not an albumentations transform"]),
    ({"name": "Affine", "rotat": [-5, 5]}, ["'Affine'", "'rotat'", "rotate"]),
    ({"name": "Affine", "rotate": "lots"}, ["'Affine'", "rotate", "lots"]),
    ({"name": "HorizontalFlip", "p": 2}, ["'HorizontalFlip'", "less than or equal to 1"]),
    ({"rotate": 5}, ["`name`", "Received: {'rotate': 5}"]),
    ("Affine", ["`name`", "Received: 'Affine'"]),
])
def test_bad_transforms_raise_value_error_naming_them(spec, pieces):
    with pytest.raises(ValueError) as info:
        build_augmentation("light", [spec])
    message = str(info.value)
    assert "\n" not in message
    for piece in pieces:
        assert piece in message, message


def test_list_transforms_holds_real_transforms_only():
    names = list_transforms()
    assert {"Affine", "GridDistortion", "CoarseDropout", "HorizontalFlip"} <= set(names)
    assert not {"BasicTransform", "DualTransform", "ImageOnlyTransform", "Compose", "OneOf"} & set(names)
    assert isinstance(build_transform({"name": "Affine"}), A.Affine)


# ----------------------------------------------------------------------------- batches


def test_none_is_identity():
    images = character_batch()
    dataset = tf.data.Dataset.from_tensors(images)
    assert augment_dataset(dataset, None) is dataset
    np.testing.assert_array_equal(BatchAugmenter(None, seed=0)(images), images)
    (out,) = list(augment_dataset(tf.data.Dataset.from_tensors((images, np.zeros(8))), None, seed=0)
                  .as_numpy_iterator())
    np.testing.assert_array_equal(out[0], images)


@pytest.mark.parametrize("preset", ["light", "default"])
@pytest.mark.parametrize("make_batch", [character_batch, photo_batch])
def test_presets_keep_shape_and_dtype_change_images_and_follow_the_seed(preset, make_batch):
    images = make_batch()
    augmentation = build_augmentation(preset)
    out = BatchAugmenter(augmentation, seed=5)(images, batch_index=0)
    assert out.shape == images.shape and out.dtype == np.uint8
    changed = [not np.array_equal(a, b) for a, b in zip(out, images)]
    assert any(changed)
    np.testing.assert_array_equal(BatchAugmenter(augmentation, seed=5)(images, batch_index=0), out)
    assert not np.array_equal(BatchAugmenter(augmentation, seed=6)(images, batch_index=0), out)
    assert not np.array_equal(BatchAugmenter(augmentation, seed=5)(images, batch_index=1), out)
    np.testing.assert_array_equal(images, make_batch())  # the input is not modified in place


def test_batch_numbering_in_call_order_and_across_threads():
    images = photo_batch(4)
    augmentation = build_augmentation("default")
    augment = BatchAugmenter(augmentation, seed=3)
    sequential = [augment(images) for _ in range(3)]
    fresh = BatchAugmenter(augmentation, seed=3)
    for index in (2, 0, 1):  # out of order, by index
        np.testing.assert_array_equal(fresh(images, batch_index=index), sequential[index])
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, fresh(images, batch_index=i)))
               for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in range(3):
        np.testing.assert_array_equal(results[index], sequential[index])


def test_batch_augmenter_rejects_bad_input():
    augment = BatchAugmenter(build_augmentation("light"), seed=0)
    with pytest.raises(ValueError, match="float32"):
        augment(np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        augment(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="-1"):
        BatchAugmenter(None, seed=-1)
    with pytest.raises(ValueError, match="shape"):
        BatchAugmenter(build_augmentation("none", [{"name": "CenterCrop", "height": 4, "width": 4}]), 0)(
            np.zeros((1, 8, 8, 1), np.uint8))


# ----------------------------------------------------------------------------- tf.data


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_dataset_over_pk_dataset(channels):
    labels = np.repeat(np.arange(6, dtype=np.int32), 4)
    images = character_batch(len(labels), channels=channels, seed=1)
    source = pk_dataset(labels, 6, classes_per_batch=3, images_per_class=2, images=images, seed=4)
    augmentation = build_augmentation("default", [{"name": "HorizontalFlip", "p": 0.5}])
    dataset = augment_dataset(source, augmentation, seed=7)
    assert dataset.element_spec[0].shape.as_list() == [6, 28, 28, channels]
    assert dataset.element_spec[0].dtype == tf.uint8
    plain = list(source.take(4).as_numpy_iterator())
    first = list(dataset.take(4).as_numpy_iterator())
    second = list(augment_dataset(source, augmentation, seed=7).take(4).as_numpy_iterator())
    other = list(augment_dataset(source, augmentation, seed=8).take(4).as_numpy_iterator())
    for (x0, y0), (x1, y1), (x2, y2), (x3, _) in zip(plain, first, second, other):
        assert x1.shape == x0.shape and x1.dtype == np.uint8
        np.testing.assert_array_equal(y1, y0)  # labels untouched
        np.testing.assert_array_equal(x1, x2)  # same seed, same images
        assert not np.array_equal(x1, x0) and not np.array_equal(x1, x3)
    # Batch i is augmented as BatchAugmenter does batch i, and resuming at batch 2 repeats it.
    np.testing.assert_array_equal(BatchAugmenter(augmentation, seed=7)(plain[2][0], batch_index=2), first[2][0])
    resumed = next(augment_dataset(source.skip(2), augmentation, seed=7, start_batch=2).as_numpy_iterator())
    np.testing.assert_array_equal(resumed[0], first[2][0])


def test_augment_dataset_of_images_only_and_rejects_float_images():
    images = photo_batch(4)
    (out,) = list(augment_dataset(tf.data.Dataset.from_tensors(images), build_augmentation("light"), seed=0)
                  .as_numpy_iterator())
    assert out.shape == images.shape and out.dtype == np.uint8
    with pytest.raises(ValueError, match="uint8"):
        augment_dataset(tf.data.Dataset.from_tensors(images.astype(np.float32)), build_augmentation("light"))
