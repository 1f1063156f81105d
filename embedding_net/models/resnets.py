"""ResNet18 and ResNet34 (He et al. 2016), which `keras.applications` lacks, in plain Keras 3.

The layout follows torchvision's `resnet18` / `resnet34` layer for layer (bias-free convolutions,
symmetric padding, a 1x1 projection shortcut where a stage changes shape), so their
trainable parameter counts equal torchvision's without the classifier, and the layer names
(`conv1`, `layer2_block1_conv1`, ...) map one to one onto torchvision's state-dict keys.
Besides standard Keras layers, only two registered subclasses of Keras layers with faster
training gradients (`normalization.BatchNormalization`, `convolution.Conv2D`), so the models
reload with `safe_mode=True`.
"""

import keras

from embedding_net.models.convolution import Conv2D
from embedding_net.models.normalization import BatchNormalization

# Blocks per stage; each stage doubles the channels and (after the first) halves the resolution.
RESNET_STAGES = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
STAGE_FILTERS = (64, 128, 256, 512)

# torchvision initialises convolutions with kaiming_normal_(mode="fan_out"), an untruncated normal.
_CONV_INIT = keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _conv(x, filters, kernel_size, strides, name):
    """A bias-free convolution with torchvision's symmetric padding.

    Keras' `padding="same"` pads strided convolutions asymmetrically (more at the bottom and
    right); there, explicit zero padding followed by a `valid` convolution reproduces PyTorch's
    `padding=kernel_size // 2` exactly. Unstrided, `same` is already symmetric, and saves
    the copy of the padded map and its gradient.
    """
    padding = "same"
    if kernel_size > 1 and strides > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, name=f"{name}_pad")(x)
        padding = "valid"
    return Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=False,
                  kernel_initializer=_CONV_INIT, name=name)(x)


def _batch_norm(x, name):
    # PyTorch's defaults: eps 1e-5 and momentum 0.1, which is Keras' momentum 0.9.
    return BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def _basic_block(x, filters, strides, name):
    """Two 3x3 convolutions with batch norm, added to the (projected) input, then ReLU."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, strides, name=f"{name}_downsample_conv")
        shortcut = _batch_norm(shortcut, name=f"{name}_downsample_bn")
    x = _conv(x, filters, 3, strides, name=f"{name}_conv1")
    x = _batch_norm(x, name=f"{name}_bn1")
    x = keras.layers.ReLU(name=f"{name}_relu1")(x)
    x = _conv(x, filters, 3, 1, name=f"{name}_conv2")
    x = _batch_norm(x, name=f"{name}_bn2")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.ReLU(name=f"{name}_relu2")(x)


def basic_resnet(input_shape, depth_name):
    """A ResNet of basic blocks without its classifier: images [B, H, W, C] to [B, H/32, W/32, 512].

    Args:
        input_shape: (height, width, channels) of the preprocessed images.
        depth_name: `resnet18` or `resnet34`.

    Returns:
        A `keras.Model` named `depth_name` whose output is the last stage's feature map
        (ceil(H / 32) x ceil(W / 32) cells).
    """
    if depth_name not in RESNET_STAGES:
        raise ValueError(f"`depth_name` must be one of {', '.join(RESNET_STAGES)}. Received: {depth_name!r}")
    inputs = keras.Input(input_shape)
    x = _conv(inputs, 64, 7, 2, name="conv1")
    x = _batch_norm(x, name="bn1")
    x = keras.layers.ReLU(name="relu")(x)
    # PyTorch pads max-pooling with -inf; zero padding is the same here because x >= 0 after ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (blocks, filters) in enumerate(zip(RESNET_STAGES[depth_name], STAGE_FILTERS)):
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, strides, name=f"layer{stage + 1}_block{block + 1}")
    return keras.Model(inputs, x, name=depth_name)


def resnet18(input_shape, weights=None):
    """ResNet18 feature extractor (11.2M trainable parameters); no pretrained weights."""
    return basic_resnet(input_shape, "resnet18")


def resnet34(input_shape, weights=None):
    """ResNet34 feature extractor (21.3M trainable parameters); no pretrained weights."""
    return basic_resnet(input_shape, "resnet34")
