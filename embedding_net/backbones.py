"""Backbones by name: a registry of feature extractors, looked up with `get_backbone`.

A backbone maps preprocessed float images [B, H, W, C] to a feature map [B, h, w, F]; the
embedding head (pooling, projection, normalisation) is added by `embedding_net.models`.
Register a new one with `@register_backbone(...)`; the test suite then builds, trains, saves
and reloads it like every other.
"""

import dataclasses

import keras


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
    """

    name: str
    builder: object
    preprocessing: str
    min_input_size: int
    rgb: bool
    pretrained: tuple = ()


_REGISTRY = {}


def register_backbone(name, preprocessing, min_input_size, rgb=False, pretrained=()):
    """Decorator registering `builder(input_shape, weights) -> keras.Model` under `name`."""

    def decorator(builder):
        if name in _REGISTRY:
            raise ValueError(f"a backbone named {name!r} is already registered")
        _REGISTRY[name] = BackboneSpec(name, builder, preprocessing, min_input_size, rgb, tuple(pretrained))
        return builder

    return decorator


def list_backbones():
    """The sorted names of every registered backbone."""
    return sorted(_REGISTRY)


def get_backbone(name):
    """The `BackboneSpec` registered as `name`; a `ValueError` lists the valid names."""
    if name not in _REGISTRY:
        raise ValueError(f"`backbone` must be one of {', '.join(list_backbones())}. Received: {name!r}")
    return _REGISTRY[name]


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


@register_backbone("conv4", preprocessing="unit", min_input_size=16)
def conv4(input_shape, weights=None):
    """Four blocks of conv3x3-64, batch norm, ReLU and 2x2 max-pooling (Vinyals et al. 2016),
    the standard few-shot network for Omniglot-sized images."""
    inputs = keras.Input(input_shape)
    x = inputs
    for block in range(4):
        x = keras.layers.Conv2D(64, 3, padding="same", name=f"block{block + 1}_conv")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"block{block + 1}_bn")(x)
        x = keras.layers.ReLU(name=f"block{block + 1}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block + 1}_pool")(x)
    return keras.Model(inputs, x, name="conv4")


def _keras_application(constructor, model_name):
    def builder(input_shape, weights=None):
        model = constructor(include_top=False, weights=weights, input_shape=input_shape)
        model.name = model_name
        return model

    return builder


register_backbone("resnet50", "caffe", 32, rgb=True, pretrained=("imagenet",))(
    _keras_application(keras.applications.ResNet50, "resnet50")
)
register_backbone("mobilenetv2", "tf", 32, rgb=True, pretrained=("imagenet",))(
    _keras_application(keras.applications.MobileNetV2, "mobilenetv2")
)
register_backbone("efficientnetb0", "raw", 32, rgb=True, pretrained=("imagenet",))(
    _keras_application(keras.applications.EfficientNetB0, "efficientnetb0")
)
