"""The backbone registry: coverage of keras.applications, preprocessing and minimum sizes per
family, and the native ResNet18/34 and Koch et al. (2015) networks.

Building, training, saving and reloading every backbone is
`test_models.py::test_backbone_trains_saves_and_reloads`.
"""

import sys

import keras
import numpy as np
import pytest

from embedding_net.models.backbones import OMITTED_KERAS_APPLICATIONS, build_backbone, get_backbone, list_backbones
from embedding_net.models.layers import ImagePreprocessing
from embedding_net.models.builders import build_embedding_model
from embedding_net.models.resnets import basic_resnet

# Every network keras.applications exports, by the registry's name for it (its lowercased name).
KERAS_APPLICATIONS = {name.lower(): getattr(keras.applications, name)
                      for name in dir(keras.applications) if name[:1].isupper()}
REGISTERED_APPLICATIONS = sorted(set(KERAS_APPLICATIONS) & set(list_backbones()))

# torchvision's resnet18 / resnet34 have 11,689,512 / 21,797,672 parameters, of which the
# classifier (512 x 1000 + 1000) is 513,000. Batch-norm statistics are buffers, not parameters,
# in PyTorch, so these are Keras' trainable counts.
TORCHVISION_FEATURE_PARAMS = {"resnet18": 11_689_512 - 513_000, "resnet34": 21_797_672 - 513_000}


def trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


# ----------------------------------------------------------------------------- keras.applications


def test_every_keras_application_is_registered_but_the_omitted_ones():
    assert len(KERAS_APPLICATIONS) >= 40  # the listing itself works
    omitted = {name.lower() for name in OMITTED_KERAS_APPLICATIONS}
    assert omitted <= set(KERAS_APPLICATIONS)  # real names, not typos
    # A network a new Keras adds fails here until it is registered (or knowingly omitted).
    assert set(REGISTERED_APPLICATIONS) | omitted == set(KERAS_APPLICATIONS)
    assert not omitted & set(REGISTERED_APPLICATIONS)
    for name in ("resnet101v2", "efficientnetv2s", "convnexttiny", "mobilenetv3small",
                 "nasnetmobile", "inceptionresnetv2", "densenet121", "vgg16", "efficientnetb6"):
        assert name in REGISTERED_APPLICATIONS


def test_registry_holds_the_native_backbones_keras_applications_and_keras_hub_towers():
    from embedding_net.models import hub

    assert set(list_backbones()) == (set(REGISTERED_APPLICATIONS) | {"conv4", "simple", "resnet18", "resnet34"}
                                     | set(hub.ARCHITECTURES))


def test_an_omitted_network_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="unknown backbone 'convnextxlarge'; available: .*convnexttiny"):
        build_backbone("convnextxlarge", (32, 32, 3))


@pytest.mark.parametrize("name", REGISTERED_APPLICATIONS)
def test_keras_application_spec(name):
    spec = get_backbone(name)
    assert spec.rgb and spec.pretrained == ("imagenet",)


@pytest.mark.parametrize("name", REGISTERED_APPLICATIONS)
def test_preprocessing_matches_the_family_preprocess_input(name):
    # Each family's own preprocess_input (caffe, tf, torch, or the identity for the networks
    # that rescale inside the model) must equal the spec's ImagePreprocessing mode.
    family = sys.modules[KERAS_APPLICATIONS[name].__module__]
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3), dtype=np.uint8)
    expected = family.preprocess_input(images.astype(np.float32))
    out = ImagePreprocessing(get_backbone(name).preprocessing)(images)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("name", REGISTERED_APPLICATIONS)
def test_min_input_size_is_the_one_keras_accepts(name):
    # Keras checks the size before building anything, so this is cheap; that the minimum
    # itself builds (and trains) is test_models.py::test_backbone_trains_saves_and_reloads.
    size = get_backbone(name).min_input_size
    for shape in [(size - 1, size, 3), (size, size - 1, 3)]:
        with pytest.raises(ValueError, match=f"at least {size}x{size}"):
            KERAS_APPLICATIONS[name](include_top=False, weights=None, input_shape=shape)


def test_min_input_sizes_of_the_inception_family():
    assert get_backbone("xception").min_input_size == 71
    assert get_backbone("inceptionv3").min_input_size == 75
    assert get_backbone("inceptionresnetv2").min_input_size == 75


@pytest.mark.parametrize("name", ["mobilenet", "mobilenetv2", "mobilenetv3small", "mobilenetv3large"])
def test_imagenet_size_caveats_are_documented(name):
    assert "224" in get_backbone(name).notes


# ----------------------------------------------------------------------------- ResNet18 / ResNet34


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_resnet_matches_torchvision_parameter_count(name):
    model = build_backbone(name, (224, 224, 3))
    assert model.name == name
    assert trainable_count(model) == TORCHVISION_FEATURE_PARAMS[name]
    assert tuple(model.output.shape) == (None, 7, 7, 512)


@pytest.mark.parametrize("name, blocks", [("resnet18", 8), ("resnet34", 16)])
def test_resnet_layout(name, blocks):
    model = build_backbone(name, (64, 64, 3))
    layer_names = [layer.name for layer in model.layers]
    assert sum(n.endswith("_add") for n in layer_names) == blocks  # basic blocks
    # A projection shortcut exactly where a stage halves the resolution and doubles the channels.
    assert [n for n in layer_names if n.endswith("_downsample_conv")] == [
        "layer2_block1_downsample_conv", "layer3_block1_downsample_conv", "layer4_block1_downsample_conv"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert not any(conv.use_bias for conv in convs)  # batch norm follows every convolution
    assert get_backbone(name).pretrained == ()


@pytest.mark.parametrize("shape, cells", [((32, 32), (1, 1)), ((64, 96), (2, 3)), ((33, 65), (2, 3)),
                                          ((224, 224), (7, 7))])
def test_resnet18_output_stride_is_32(shape, cells):
    model = build_backbone("resnet18", (*shape, 3))
    out = model(np.zeros((2, *shape, 3), np.float32))
    assert tuple(out.shape) == (2, *cells, 512)


def test_basic_resnet_rejects_an_unknown_depth():
    with pytest.raises(ValueError, match="'resnet50'"):
        basic_resnet((32, 32, 3), "resnet50")


def test_resnet18_takes_grayscale_through_the_embedding_model():
    model = build_embedding_model("resnet18", (32, 32, 1), 4)
    assert model.get_layer("preprocessing").output_channels == 3
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    assert tuple(model(images).shape) == (2, 4)


# ----------------------------------------------------------------------------- simple (Koch et al.)


def test_simple_is_the_koch_convnet():
    model = build_backbone("simple", (105, 105, 1))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size) for c in convs] == [(64, (10, 10)), (128, (7, 7)), (128, (4, 4)),
                                                           (256, (4, 4))]
    assert all(c.activation is keras.activations.relu for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 3
    # 105 px as in the paper: 96 -> 48 -> 42 -> 21 -> 18 -> 9 -> 6.
    assert tuple(model.output.shape) == (None, 6, 6, 256)
    weights_and_biases = [(64, 1 * 10 * 10), (128, 64 * 7 * 7), (128, 128 * 4 * 4), (256, 128 * 4 * 4)]
    assert model.count_params() == sum(filters * (fan_in + 1) for filters, fan_in in weights_and_biases)


def test_simple_minimum_input_is_65():
    spec = get_backbone("simple")
    assert spec.min_input_size == 65 and not spec.rgb and spec.pretrained == ()
    assert tuple(build_backbone("simple", (65, 65, 1)).output.shape) == (None, 1, 1, 256)
    with pytest.raises(ValueError, match="64x65"):
        build_backbone("simple", (64, 65, 1))
    # The registry's limit is the architecture's: at 64 px the last 4x4 convolution meets a 3x3 map.
    with pytest.raises(ValueError, match="zero or negative"):
        spec.builder((64, 64, 1))


# ----------------------------------------------------------------------------- conv4


def test_conv4_and_the_projection_start_from_fan_in_uniform_weights():
    # U(+-1/sqrt(fan_in)), PyTorch's default: every draw within the bound, and the spread of a
    # uniform (bound / sqrt(3)), where Keras' glorot_uniform would give 1.7x larger kernels.
    keras.utils.set_random_seed(0)
    model = build_embedding_model("conv4", (28, 28, 1), embedding_size=128)
    tower = model.get_layer("conv4")
    kernels = [layer.kernel for layer in tower.layers if isinstance(layer, keras.layers.Conv2D)]
    kernels.append(model.get_layer("projection").kernel)
    assert [tuple(k.shape) for k in kernels] == [(3, 3, 1, 64)] + [(3, 3, 64, 64)] * 3 + [(64, 128)]
    for kernel in kernels:
        values = keras.ops.convert_to_numpy(kernel)
        bound = 1.0 / np.sqrt(np.prod(values.shape[:-1]))
        assert np.abs(values).max() <= bound
        assert np.std(values) == pytest.approx(bound / np.sqrt(3.0), rel=0.08)
