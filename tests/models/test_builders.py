"""Backbones, the serialisable layers and the embedding model: build, train, save, reload."""

import keras
import numpy as np
import pytest

from embedding_net.models.backbones import (
    BackboneSpec,
    build_backbone,
    get_backbone,
    list_backbones,
    register_backbone,
)
from embedding_net.models.layers import PREPROCESSING_MODES, ImagePreprocessing, L2Normalization
from embedding_net.losses.triplet import TripletLoss
from embedding_net.models.builders import build_embedding_model, load_embedding_model

CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68])
TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])
LABELS = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)  # 4 classes x 2 images


# Written in embedding_net itself; the rest are keras.applications networks (marked slow).
NATIVE_BACKBONES = ("conv4", "simple", "resnet18", "resnet34")


def backbone_params():
    """Every registered backbone; the keras.applications ones are marked slow."""
    return [pytest.param(name, marks=() if name in NATIVE_BACKBONES else pytest.mark.slow)
            for name in list_backbones()]


def random_images(n, size, channels, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def assert_unit_norm(embeddings):
    norms = np.linalg.norm(np.asarray(embeddings, np.float64), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- every backbone


@pytest.mark.parametrize("name", backbone_params())
def test_backbone_trains_saves_and_reloads(name, tmp_path):
    # One model per backbone for every check, at the smallest size it accepts, with 4 images
    # (2 classes x 2): the suite must stay within CI's time on two CPU cores.
    spec = get_backbone(name)
    size = spec.min_input_size
    keras.utils.set_random_seed(0)
    model = build_embedding_model(name, (size, size, 1), embedding_size=8, weights=None)
    assert model.inputs[0].dtype == "uint8"
    tower = model.get_layer(name)
    # Eager: tracing the train function of a deep network costs 5-20 s on CPU, more than the
    # step itself; conv4 and the training tests cover the compiled path. SGD has no slot
    # variables, so the saved file holds little more than the weights; clipping bounds each
    # update by 1e-3 as Adam's first step would (plain SGD blows up ResNet152 and EfficientNetB5
    # in one step: batch norm on 1x1 maps of 4 images gives huge gradients). The soft margin
    # never reaches 0, so every backbone gets a gradient (the hinge is 0 for some at random init).
    model.compile(optimizer=keras.optimizers.SGD(1e-3, clipvalue=1.0),
                  loss=TripletLoss(mining="all", soft_margin=True), run_eagerly=name != "conv4")

    images = random_images(4, size, 1)
    labels = LABELS[:4]
    first_kernel = tower.trainable_variables[0]  # the stem: the gradient reached the input end
    first_before = first_kernel.numpy().copy()
    projection_before = model.get_layer("projection").kernel.numpy().copy()
    loss = model.train_on_batch(images, labels)
    loss = float(np.asarray(loss).reshape(-1)[0])
    assert np.isfinite(loss) and loss >= 0.0
    assert not np.array_equal(model.get_layer("projection").kernel.numpy(), projection_before)
    assert not np.array_equal(first_kernel.numpy(), first_before)

    embeddings = keras.ops.convert_to_numpy(model(images, training=False))
    assert embeddings.shape == (4, 8)
    assert embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()
    assert_unit_norm(embeddings)

    path = tmp_path / f"{name}.keras"
    model.save(str(path))
    del model, tower, first_kernel  # only one copy of a large network in memory at a time
    try:
        reloaded = keras.saving.load_model(str(path), safe_mode=True)
    finally:
        path.unlink()  # up to 230 MB (ResNet152); pytest keeps the last runs' tmp_paths
    assert reloaded.inputs[0].dtype == "uint8"
    assert tuple(reloaded.inputs[0].shape) == (None, size, size, 1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(images, training=False)), embeddings, atol=1e-6
    )
    assert isinstance(reloaded.loss, TripletLoss)  # the loss comes back with the model


# ----------------------------------------------------------------------------- conv4 (fast)


def test_conv4_rgb_input_and_load_embedding_model(tmp_path):
    keras.utils.set_random_seed(1)
    model = build_embedding_model("conv4", (28, 28, 3), embedding_size=8, pooling="max")
    assert tuple(model.inputs[0].shape) == (None, 28, 28, 3)
    assert model.get_layer("preprocessing").output_channels == 3
    images = random_images(5, 28, 3, seed=2)
    embeddings = keras.ops.convert_to_numpy(model(images, training=False))
    assert embeddings.shape == (5, 8) and embeddings.dtype == np.float32
    assert_unit_norm(embeddings)
    # Not all in one orthant: no ReLU before the normalisation.
    assert (embeddings < 0).any() and (embeddings > 0).any()
    # predict() (compiled graph) agrees with the eager call.
    np.testing.assert_allclose(model.predict(images, verbose=0), embeddings, atol=1e-6)

    path = str(tmp_path / "conv4.keras")
    model.save(path)
    reloaded = load_embedding_model(path)
    assert reloaded.inputs[0].dtype == "uint8"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(images)), embeddings, atol=1e-6)


def test_conv4_minimum_input_size():
    spec = get_backbone("conv4")
    model = build_embedding_model("conv4", (spec.min_input_size, spec.min_input_size, 1), 4)
    out = model(random_images(2, spec.min_input_size, 1))
    assert tuple(out.shape) == (2, 4)
    with pytest.raises(ValueError, match=str(spec.min_input_size)):
        build_embedding_model("conv4", (spec.min_input_size - 1, 64, 1), 4)


def test_conv4_non_square_input():
    model = build_embedding_model("conv4", (20, 40, 1), 4)
    images = np.random.default_rng(0).integers(0, 256, (2, 20, 40, 1), dtype=np.uint8)
    assert tuple(model(images).shape) == (2, 4)


def test_build_embedding_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="pooling"):
        build_embedding_model("conv4", (28, 28, 1), 4, pooling="sum")
    with pytest.raises(ValueError, match="embedding_size"):
        build_embedding_model("conv4", (28, 28, 1), 0)


# ----------------------------------------------------------------------------- registry


def test_list_backbones_sorted_and_specs():
    names = list_backbones()
    assert names == sorted(names)
    assert "conv4" in names
    for name in names:
        spec = get_backbone(name)
        assert isinstance(spec, BackboneSpec)
        assert spec.name == name
        assert spec.preprocessing in PREPROCESSING_MODES
        assert spec.min_input_size >= 1
        assert isinstance(spec.pretrained, tuple)


def test_get_backbone_unknown_lists_valid_names():
    with pytest.raises(ValueError) as info:
        get_backbone("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in list_backbones():
        assert name in message


def test_build_backbone_unknown_name():
    with pytest.raises(ValueError, match="nope"):
        build_backbone("nope", (32, 32, 3))
    with pytest.raises(ValueError, match="nope"):
        build_embedding_model("nope", (32, 32, 1))


@pytest.mark.parametrize("name", list_backbones())
def test_input_smaller_than_minimum_raises(name):
    spec = get_backbone(name)
    small = spec.min_input_size - 1
    channels = 3 if spec.rgb else 1
    with pytest.raises(ValueError) as info:
        build_backbone(name, (small, spec.min_input_size, channels))
    assert str(spec.min_input_size) in str(info.value) and str(small) in str(info.value)
    with pytest.raises(ValueError):
        build_embedding_model(name, (spec.min_input_size, small, 1), 4)


@pytest.mark.parametrize("name", list_backbones())
def test_weights_not_offered_raise(name):
    spec = get_backbone(name)
    size = max(32, spec.min_input_size)
    with pytest.raises(ValueError) as info:
        build_backbone(name, (size, size, 3), weights="not-a-weight-set")
    message = str(info.value)
    assert "'not-a-weight-set'" in message and "null" in message
    for offered in spec.pretrained:
        assert offered in message
    if name in NATIVE_BACKBONES:
        # build_embedding_model takes any other string for a weights file and finds it missing
        # only after building the network: 2-4 s for each keras.applications one, so not those.
        with pytest.raises(ValueError):
            build_embedding_model(name, (size, size, 3), 4, weights="not-a-weight-set")


def test_conv4_offers_no_pretrained_weights():
    with pytest.raises(ValueError, match="imagenet"):
        build_backbone("conv4", (28, 28, 1), weights="imagenet")


def test_register_duplicate_name_raises():
    before = {name: get_backbone(name) for name in list_backbones()}
    with pytest.raises(ValueError, match="conv4"):
        register_backbone("conv4", preprocessing="unit", min_input_size=1)(lambda shape, weights: None)
    assert {name: get_backbone(name) for name in list_backbones()} == before


# ----------------------------------------------------------------------------- ImagePreprocessing


def reference_preprocessing(x, mode):
    """numpy float64 reference of the keras.applications conventions, x: float [..., C]."""
    x = np.asarray(x, np.float64)
    channels = x.shape[-1]
    if mode == "unit":
        return x / 255.0
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "caffe":
        if channels == 3:
            return x[..., ::-1] - CAFFE_BGR_MEAN
        return x - CAFFE_BGR_MEAN.mean()
    if mode == "torch":
        if channels == 3:
            return (x / 255.0 - TORCH_MEAN) / TORCH_STD
        return (x / 255.0 - TORCH_MEAN.mean()) / TORCH_STD.mean()
    if mode == "raw":
        return x
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
@pytest.mark.parametrize("channels", [1, 3])
def test_preprocessing_modes_match_reference(mode, channels):
    images = random_images(2, 5, channels, seed=4)
    images[0, 0, 0] = 0
    images[0, 0, 1] = 255
    out = keras.ops.convert_to_numpy(ImagePreprocessing(mode)(images))
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out, reference_preprocessing(images, mode), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
def test_preprocessing_matches_keras_applications(mode):
    images = random_images(2, 4, 3, seed=5)
    expected = keras.applications.imagenet_utils.preprocess_input(
        images.astype(np.float32), mode=mode, data_format="channels_last")
    out = keras.ops.convert_to_numpy(ImagePreprocessing(mode)(images))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)


def test_caffe_flips_rgb_to_bgr():
    image = np.zeros((1, 1, 1, 3), np.uint8)
    image[..., 0] = 200  # red
    out = keras.ops.convert_to_numpy(ImagePreprocessing("caffe")(image))[0, 0, 0]
    np.testing.assert_allclose(out, [0 - 103.939, 0 - 116.779, 200 - 123.68], atol=1e-4)


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
def test_grayscale_is_tiled_to_three_channels(mode):
    gray = random_images(2, 4, 1, seed=6)
    layer = ImagePreprocessing(mode, output_channels=3)
    out = keras.ops.convert_to_numpy(layer(gray))
    assert out.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(out, reference_preprocessing(np.repeat(gray, 3, -1), mode),
                               rtol=1e-6, atol=1e-4)
    assert layer.compute_output_shape((None, 4, 4, 1)) == (None, 4, 4, 3)


def test_three_channels_pass_through_with_output_channels_3():
    images = random_images(1, 3, 3, seed=7)
    out = keras.ops.convert_to_numpy(ImagePreprocessing("unit", output_channels=3)(images))
    np.testing.assert_allclose(out, images / 255.0, atol=1e-6)


def test_preprocessing_accepts_float_input():
    images = random_images(1, 3, 3, seed=8)
    out = ImagePreprocessing("tf")(images.astype(np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), images / 127.5 - 1.0, atol=1e-6)


@pytest.mark.parametrize("mode", PREPROCESSING_MODES)
def test_preprocessing_config_round_trip(mode):
    layer = ImagePreprocessing(mode, output_channels=3, name="pre")
    config = layer.get_config()
    assert config["mode"] == mode and config["output_channels"] == 3
    clone = ImagePreprocessing.from_config(config)
    assert (clone.mode, clone.output_channels, clone.name) == (mode, 3, "pre")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, ImagePreprocessing) and again.get_config() == config
    images = random_images(2, 3, 1, seed=9)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(clone(images)),
                                  keras.ops.convert_to_numpy(layer(images)))


def test_preprocessing_rejects_bad_arguments():
    with pytest.raises(ValueError) as info:
        ImagePreprocessing("imagenet")
    for mode in PREPROCESSING_MODES:
        assert mode in str(info.value)
    with pytest.raises(ValueError, match="output_channels"):
        ImagePreprocessing("unit", output_channels=2)


# ----------------------------------------------------------------------------- L2Normalization


def test_l2_normalization_unit_norm():
    x = np.random.default_rng(10).normal(size=(6, 7)).astype(np.float32) * 50
    out = keras.ops.convert_to_numpy(L2Normalization()(x))
    assert out.dtype == np.float32
    assert_unit_norm(out)
    np.testing.assert_allclose(out, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_l2_normalization_zero_vector_is_finite():
    x = np.zeros((3, 4), np.float32)
    x[1] = [3, 4, 0, 0]
    out = keras.ops.convert_to_numpy(L2Normalization()(x))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0], 0.0)
    np.testing.assert_array_equal(out[2], 0.0)
    np.testing.assert_allclose(out[1], [0.6, 0.8, 0, 0], atol=1e-6)


def test_l2_normalization_zero_vector_gradient_is_finite():
    import tensorflow as tf

    x = tf.zeros((2, 3))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(L2Normalization()(x))
    assert np.isfinite(tape.gradient(y, x).numpy()).all()


def test_l2_normalization_float16_input_gives_float32():
    x = np.array([[300.0, 400.0]], np.float16)  # the squared norm overflows float16
    out = keras.ops.convert_to_numpy(L2Normalization()(x))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8]], atol=1e-6)


def test_l2_normalization_config_round_trip():
    layer = L2Normalization(epsilon=1e-6, name="l2")
    config = layer.get_config()
    assert config["epsilon"] == 1e-6
    clone = L2Normalization.from_config(config)
    assert clone.epsilon == 1e-6 and clone.name == "l2"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(again, L2Normalization) and again.epsilon == 1e-6
    assert layer.compute_output_shape((None, 5)) == (None, 5)


def test_invert_feeds_255_minus_pixel_and_round_trips(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 1)).astype("uint8")
    layer = ImagePreprocessing(mode="unit", invert=True)
    np.testing.assert_allclose(np.asarray(layer(images)), (255.0 - images) / 255.0, atol=1e-6)
    assert ImagePreprocessing.from_config(layer.get_config()).invert is True
    model = build_embedding_model("conv4", (16, 16, 1), 8, invert=True)
    path = str(tmp_path / "inverted.keras")
    model.save(path)
    reloaded = load_embedding_model(path)
    assert reloaded.get_layer("preprocessing").invert is True
    x = np.random.default_rng(1).integers(0, 256, (3, 16, 16, 1)).astype("uint8")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_colour_to_grayscale_uses_luma_weights():
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 3, 3)).astype("uint8")
    gray = np.asarray(ImagePreprocessing(mode="raw", output_channels=1)(images))
    expected = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert gray.shape == (2, 3, 3, 1)
    np.testing.assert_allclose(gray[..., 0], expected, rtol=1e-5)


def test_a_model_with_a_lambda_layer_is_refused(tmp_path):
    from embedding_net.errors import ModelFileError

    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    path = str(tmp_path / "lambda.keras")
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match="lambda.keras"):
        load_embedding_model(path)


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    from embedding_net.errors import ModelFileError

    path = tmp_path / "model.keras"
    path.write_text("not a zip archive")
    with pytest.raises(ModelFileError, match="cannot load model"):
        load_embedding_model(str(path))
    with pytest.raises(ModelFileError, match="not found"):
        load_embedding_model(str(tmp_path / "missing.keras"))


def test_gem_pooling_matches_the_formula_and_its_limits():
    from embedding_net.models.layers import GeneralizedMeanPooling

    x = np.random.default_rng(0).uniform(0.1, 2.0, (2, 3, 4, 5)).astype("float32")
    for p in (1.0, 3.0):
        expected = np.mean(x**p, axis=(1, 2)) ** (1 / p)
        np.testing.assert_allclose(np.asarray(GeneralizedMeanPooling(p=p)(x)), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(GeneralizedMeanPooling(p=1.0)(x)), x.mean(axis=(1, 2)), rtol=1e-5)
    near_max = np.asarray(GeneralizedMeanPooling(p=60.0)(x))
    np.testing.assert_allclose(near_max, x.max(axis=(1, 2)), rtol=0.05)
    with pytest.raises(ValueError, match="-1"):
        GeneralizedMeanPooling(p=-1)


def test_gem_model_learns_p_and_round_trips(tmp_path):
    # 32 px leaves conv4 a 2x2 map: over a 1x1 map GeM is the identity and p gets no gradient.
    model = build_embedding_model("conv4", (32, 32, 1), 8, pooling="gem")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=TripletLoss(mining="all"))
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1)).astype("uint8")
    model.fit(x, np.repeat(np.arange(4), 2), epochs=2, verbose=0)
    p = float(model.get_layer("pooling").exponent.numpy())
    assert p != pytest.approx(3.0)
    path = str(tmp_path / "gem.keras")
    model.save(path)
    reloaded = load_embedding_model(path)
    assert float(reloaded.get_layer("pooling").exponent.numpy()) == pytest.approx(p)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_freeze_all_or_all_but_the_last_layers():
    frozen = build_embedding_model("conv4", (16, 16, 1), 8, freeze="all")
    backbone = frozen.get_layer("conv4")
    assert not backbone.trainable and frozen.get_layer("projection").trainable
    partly = build_embedding_model("conv4", (16, 16, 1), 8, freeze=4).get_layer("conv4")
    trainable = [layer.trainable for layer in partly.layers]
    assert trainable[-4:] == [True] * 4 and not any(trainable[:-4])
    with pytest.raises(ValueError, match="-2"):
        build_embedding_model("conv4", (16, 16, 1), 8, freeze=-2)


def test_frozen_backbone_does_not_change_in_training():
    model = build_embedding_model("conv4", (16, 16, 1), 8, freeze="all")
    before = [w.copy() for w in model.get_layer("conv4").get_weights()]
    model.compile(optimizer="adam", loss=TripletLoss(mining="all"))
    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 1)).astype("uint8")
    model.fit(x, np.repeat(np.arange(4), 2), epochs=2, verbose=0)
    for old, new in zip(before, model.get_layer("conv4").get_weights()):
        np.testing.assert_array_equal(old, new)


def test_weights_from_an_earlier_model_file(tmp_path):
    from embedding_net.errors import ModelFileError

    source = build_embedding_model("conv4", (16, 16, 1), 8)
    path = str(tmp_path / "earlier.weights.h5")
    source.save_weights(path)
    x = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1)).astype("uint8")
    loaded = build_embedding_model("conv4", (16, 16, 1), 8, weights=path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), source.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ModelFileError, match="cannot load weights"):
        build_embedding_model("conv4", (16, 16, 1), 4, weights=path)  # another head size
    with pytest.raises(ModelFileError, match="not found"):
        build_embedding_model("conv4", (16, 16, 1), 8, weights=str(tmp_path / "nope.keras"))
