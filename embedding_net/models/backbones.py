"""Backbones by name: a registry of feature extractors, looked up with `get_backbone`.

A backbone maps preprocessed float images [B, H, W, C] to a feature map [B, h, w, F]; the
embedding head (pooling, projection, normalisation) is added by `embedding_net.models.builders`.
Registered: `conv4` (few-shot Omniglot), `simple` (Koch et al. 2015), `resnet18` / `resnet34`
(`embedding_net.models.resnets`) and every `keras.applications` network under its lowercased name
(`resnet101v2`, `efficientnetv2s`, `convnexttiny`, `nasnetmobile`, ...).
Register a new one with `@register_backbone(...)`; the test suite then builds, trains, saves
and reloads it like every other.
"""

import dataclasses

import keras

from embedding_net.registry import Registry

from embedding_net.models import resnets
from embedding_net.models.normalization import BatchNormalization


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and what it expects.

    Attributes:
        name: the registry name.
        builder: `builder(input_shape, weights) -> keras.Model` producing a feature map.
        preprocessing: an `ImagePreprocessing` mode.
        min_input_size: the smallest height and width the architecture accepts.
        rgb: True if the network needs 3 input channels (grayscale images are repeated).
        pretrained: the named weights it can load besides `None` (e.g. `("imagenet",)`).
        notes: caveats of the pretrained weights, e.g. the input sizes they were trained for.
    """

    name: str
    builder: object
    preprocessing: str
    min_input_size: int
    rgb: bool
    pretrained: tuple = ()
    notes: str = ""


_BACKBONES = Registry("backbone")


def register_backbone(name, preprocessing, min_input_size, rgb=False, pretrained=(), notes=""):
    """Decorator registering `builder(input_shape, weights) -> keras.Model` under `name`."""

    def decorator(builder):
        _BACKBONES.register(name, settings=())(BackboneSpec(name, builder, preprocessing, min_input_size, rgb,
                                                            tuple(pretrained), notes))
        return builder

    return decorator


def list_backbones():
    """The sorted names of every registered backbone."""
    return _BACKBONES.names()


def get_backbone(name):
    """The `BackboneSpec` registered as `name`; an unknown name is a `ConfigError` (a
    `ValueError`) listing the registered ones."""
    return _BACKBONES.get(name)


def build_backbone(name, input_shape, weights=None):
    """Builds the feature extractor `name` for float inputs of `input_shape` (H, W, C).

    Args:
        name: a registered backbone name (see `list_backbones()`).
        input_shape: (height, width, channels) after preprocessing.
        weights: None (random initialisation) or one of the spec's pretrained names.
    """
    spec = get_backbone(name)
    height, width = input_shape[0], input_shape[1]
    if min(height, width) < spec.min_input_size:
        raise ValueError(
            f"backbone {name!r} needs inputs of at least {spec.min_input_size}x"
            f"{spec.min_input_size} pixels. Received: {height}x{width}"
        )
    if weights is not None and weights not in spec.pretrained:
        names = ", ".join(["null", *spec.pretrained])
        raise ValueError(f"`weights` of backbone {name!r} must be one of {names}. Received: {weights!r}")
    return spec.builder(tuple(input_shape), weights)


def fan_in_uniform():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for convolutions and dense layers
    (kaiming_uniform with a = sqrt(5)), for layers whose scale the network then removes.

    Batch normalisation after a convolution, and unit length after the projection, make the
    output blind to the weights' scale, but Adam moves every weight by about the learning rate
    whatever its size: smaller weights turn faster. Keras' glorot_uniform starts conv4's 3 x 3
    x 64 kernels 1.7x larger, and conv4 learned slower with it: after 3,000 Omniglot steps at a
    constant rate, Proxy Anchor reached MAP@R 0.429 with glorot_uniform and 0.444 with this
    (README, "The losses, number for number")."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@register_backbone("conv4", preprocessing="unit", min_input_size=16)
def conv4(input_shape, weights=None):
    """Four blocks of conv3x3-64, batch norm, ReLU and 2x2 max-pooling (Vinyals et al. 2016),
    the standard few-shot network for Omniglot-sized images.

    The convolutions have no bias: the batch normalisation after each subtracts the mean, which
    cancels any bias, so it would only cost a pass over the activations and its gradient.
    """
    inputs = keras.Input(input_shape)
    x = inputs
    for block in range(4):
        x = keras.layers.Conv2D(64, 3, padding="same", use_bias=False, kernel_initializer=fan_in_uniform(),
                                name=f"block{block + 1}_conv")(x)
        x = BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"block{block + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block + 1}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(x)
    return keras.Model(inputs, x, name="conv4")


@register_backbone("simple", preprocessing="unit", min_input_size=65)
def simple(input_shape, weights=None):
    """The convolutional tower of Koch et al. (2015), "Siamese Neural Networks for One-shot
    Image Recognition": conv 64@10x10, 128@7x7, 128@4x4 and 256@4x4 with ReLU and 2x2
    max-pooling between them, all `valid`. 65 px is the smallest input that leaves the last
    convolution a 1x1 map (Koch et al. used 105 px, giving 6x6). The paper's sigmoid dense
    layer is replaced by the embedding head of `embedding_net.models.builders`."""
    inputs = keras.Input(input_shape)
    x = inputs
    for block, (filters, kernel_size) in enumerate(((64, 10), (128, 7), (128, 4), (256, 4))):
        x = keras.layers.Conv2D(filters, kernel_size, activation="relu", name=f"block{block + 1}_conv")(x)
        if block < 3:
            x = keras.layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(x)
    return keras.Model(inputs, x, name="simple")


# ResNet18/34 in torchvision's layout, hence 3 input channels and torch preprocessing, so that
# converted torchvision weights would fit; none ship with Keras, so `pretrained` is empty. The
# padding lets them run on any size, but below 32 px (one cell at stride 32) the last stages see
# mostly padding: 32 is also the keras.applications ResNets' minimum.
register_backbone("resnet18", "torch", 32, rgb=True)(resnets.resnet18)
register_backbone("resnet34", "torch", 32, rgb=True)(resnets.resnet34)


def _keras_application(constructor, model_name):
    def builder(input_shape, weights=None):
        model = constructor(include_top=False, weights=weights, input_shape=input_shape)
        model.name = model_name
        return model

    return builder


_SQUARE_IMAGENET = ("imagenet weights exist for square inputs of {} px; any other size loads "
                    "the 224 px ones (Keras warns)")
_IMAGENET_224 = "imagenet weights were trained on 224x224 inputs; other sizes load them too (Keras warns)"
# Every keras.applications network but OMITTED_KERAS_APPLICATIONS, under its lowercased name. The
# preprocessing is what the family's own `preprocess_input` does: caffe (ResNet V1, VGG: BGR
# minus the ImageNet mean), tf ([-1, 1]), torch (DenseNet) or raw, for the families whose
# models rescale the pixels themselves (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3).
# The minimum size is the one `include_top=False, weights=None` accepts.
_KERAS_APPLICATIONS = (
    # (constructor, preprocessing, min size, notes)
    ("ResNet50", "caffe", 32, ""),
    ("ResNet101", "caffe", 32, ""),
    ("ResNet152", "caffe", 32, ""),
    ("ResNet50V2", "tf", 32, ""),
    ("ResNet101V2", "tf", 32, ""),
    ("ResNet152V2", "tf", 32, ""),
    ("MobileNet", "tf", 32, _SQUARE_IMAGENET.format("128, 160, 192 or 224")),
    ("MobileNetV2", "tf", 32, _SQUARE_IMAGENET.format("96, 128, 160, 192 or 224")),
    ("MobileNetV3Small", "raw", 32, _IMAGENET_224),
    ("MobileNetV3Large", "raw", 32, _IMAGENET_224),
    *((f"EfficientNetB{i}", "raw", 32, "") for i in range(8)),
    *((f"EfficientNetV2{v}", "raw", 32, "") for v in ("B0", "B1", "B2", "B3", "S", "M")),
    ("DenseNet121", "torch", 32, ""),
    ("DenseNet169", "torch", 32, ""),
    ("DenseNet201", "torch", 32, ""),
    ("Xception", "tf", 71, ""),
    ("InceptionV3", "tf", 75, ""),
    ("InceptionResNetV2", "tf", 75, ""),
    ("ConvNeXtTiny", "raw", 32, ""),
    ("ConvNeXtSmall", "raw", 32, ""),
    ("ConvNeXtBase", "raw", 32, ""),
    ("VGG16", "caffe", 32, ""),
    ("VGG19", "caffe", 32, ""),
    ("NASNetMobile", "tf", 32, _IMAGENET_224),
)

# Left out: every registered backbone is built, trained, saved and reloaded by the test suite,
# which must fit CI's budget on two CPU cores, and these four alone would take ~145 s of the
# ~6 minutes allowed (25-55 s each; ConvNeXtXLarge also peaks at ~9 GB of memory). Their smaller
# siblings, which run the same code, are registered; each is one row like theirs to add back
# (NASNetLarge's imagenet weights were trained on 331x331 inputs).
OMITTED_KERAS_APPLICATIONS = ("ConvNeXtLarge", "ConvNeXtXLarge", "EfficientNetV2L", "NASNetLarge")

for _constructor, _preprocessing, _min_size, _notes in _KERAS_APPLICATIONS:
    _name = _constructor.lower()
    _builder = _keras_application(getattr(keras.applications, _constructor), _name)
    register_backbone(_name, _preprocessing, _min_size, rgb=True, pretrained=("imagenet",),
                      notes=_notes)(_builder)
