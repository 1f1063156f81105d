"""Serialisable layers that make a saved model self-contained: preprocessing, GeM pooling,
token pooling (transformer backbones), L2 normalisation and the pair-distance head of Siamese
models."""

import keras
from keras import ops

from embedding_net.mining.distances import safe_sqrt

# Per-channel constants of the ImageNet conventions used by keras.applications.
_CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_LUMA = (0.299, 0.587, 0.114)
PREPROCESSING_MODES = ("unit", "tf", "caffe", "torch", "raw")


@keras.saving.register_keras_serializable(package="embedding_net")
class ImagePreprocessing(keras.layers.Layer):
    """Turns raw uint8 images [B, H, W, C] into what a backbone expects, inside the model.

    Because this layer is part of the saved model, training, evaluation and `test.py` always
    preprocess alike.

    Args:
        mode: `unit` (x / 255), `tf` (x / 127.5 - 1), `caffe` (RGB -> BGR, minus the ImageNet
            mean), `torch` (x / 255, then ImageNet mean and std) or `raw` (float, unchanged:
            for backbones that rescale themselves, such as EfficientNet).
        output_channels: 1 or 3; grayscale inputs are repeated to 3 channels when 3 are asked
            (and colour inputs turned to grayscale when 1 is asked).
        invert: use 255 - x, so dark strokes on light paper become bright strokes on a dark
            background, which matches the zero padding of convolutions.
    """

    def __init__(self, mode="unit", output_channels=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ValueError(
                f"`mode` must be one of {', '.join(PREPROCESSING_MODES)}. Received: {mode!r}"
            )
        if output_channels not in (None, 1, 3):
            raise ValueError(f"`output_channels` must be None, 1 or 3. Received: {output_channels!r}")
        self.mode = mode
        self.output_channels = output_channels
        self.invert = bool(invert)

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.invert:
            x = 255.0 - x
        if self.output_channels == 3 and x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        elif self.output_channels == 1 and x.shape[-1] == 3:  # ITU-R BT.601 luma, as OpenCV
            x = ops.sum(x * ops.convert_to_tensor(_LUMA, self.compute_dtype), axis=-1, keepdims=True)
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            if x.shape[-1] == 3:
                x = ops.flip(x, axis=-1)
                return x - ops.convert_to_tensor(_CAFFE_BGR_MEAN, self.compute_dtype)
            return x - ops.cast(sum(_CAFFE_BGR_MEAN) / 3.0, self.compute_dtype)
        if self.mode == "torch":
            x = x / 255.0
            if x.shape[-1] == 3:
                mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
                std = ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
                return (x - mean) / std
            return (x - sum(_TORCH_MEAN) / 3.0) / (sum(_TORCH_STD) / 3.0)
        return x

    def compute_output_shape(self, input_shape):
        channels = self.output_channels or input_shape[-1]
        return (*input_shape[:-1], channels)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "output_channels": self.output_channels, "invert": self.invert})
        return config


@keras.saving.register_keras_serializable(package="embedding_net")
class L2Normalization(keras.layers.Layer):
    """Scales each vector to unit Euclidean length (the last axis), computed in float32.

    Args:
        epsilon: lower bound on the squared norm, so a zero vector stays finite.
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
        return x * ops.rsqrt(ops.maximum(squared_norm, self.epsilon))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="embedding_net")
class GeneralizedMeanPooling(keras.layers.Layer):
    """GeM pooling (Radenovic et al. 2018): (mean over positions of x^p)^(1/p) per channel.

    p = 1 is average pooling and p -> infinity tends to max pooling; p is learned. Inputs are
    clamped at `epsilon` first, since x^p needs x > 0 (features after ReLU are >= 0).

    Args:
        p: the initial exponent, > 0.
        trainable_p: learn p with the network.
        epsilon: lower clamp of the features.
    """

    def __init__(self, p=3.0, trainable_p=True, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        if not p > 0:
            raise ValueError(f"`p` must be > 0. Received: {p!r}")
        self.p = float(p)
        self.trainable_p = bool(trainable_p)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        self.exponent = self.add_weight(
            name="p", shape=(), initializer=keras.initializers.Constant(self.p), trainable=self.trainable_p)

    def call(self, inputs):
        x = ops.maximum(ops.cast(inputs, "float32"), self.epsilon)
        p = ops.cast(self.exponent, "float32")
        pooled = ops.power(ops.mean(ops.power(x, p), axis=(1, 2)), 1.0 / p)
        return ops.cast(pooled, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"p": self.p, "trainable_p": self.trainable_p, "epsilon": self.epsilon})
        return config


TOKEN_POOLINGS = ("class", "mean", "pooled")


@keras.saving.register_keras_serializable(package="embedding_net")
class TokenPooling(keras.layers.Layer):
    """One vector per image from a vision transformer, returned as a 1x1 feature map [B, 1, 1, D].

    The embedding head pools feature maps [B, h, w, D] (`avg`, `max` or `gem`); a 1x1 map lets
    transformer backbones use it unchanged: `avg` and `max` are then the identity. (`gem` clamps
    features at a small positive value first, which suits ReLU maps, not signed tokens: use
    `avg` with these backbones.)

    Args:
        mode: `class` (the first token [B, T, D] -> [B, D]: DINOv2's and CLIP's image vector),
            `mean` (the mean of the patch tokens, those after `prefix_tokens`) or `pooled`
            (the input is already one vector [B, D], e.g. SigLIP's attention-pooling head).
        prefix_tokens: how many tokens precede the patch tokens (the class token and any
            register tokens); `mean` skips them.
    """

    def __init__(self, mode="class", prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        if mode not in TOKEN_POOLINGS:
            raise ValueError(f"`mode` must be one of {', '.join(TOKEN_POOLINGS)}. Received: {mode!r}")
        if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, int) or prefix_tokens < 0:
            raise ValueError(f"`prefix_tokens` must be an integer >= 0. Received: {prefix_tokens!r}")
        self.mode = mode
        self.prefix_tokens = prefix_tokens

    def call(self, inputs):
        if self.mode == "class":
            x = inputs[:, 0, :]
        elif self.mode == "mean":
            x = ops.mean(inputs[:, self.prefix_tokens:, :], axis=1)
        else:
            x = inputs
        return x[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "prefix_tokens": self.prefix_tokens})
        return config


@keras.saving.register_keras_serializable(package="embedding_net")
class PairDistance(keras.layers.Layer):
    """The distance head of a Siamese network, from two batches of embeddings [B, D].

    Args:
        head: `euclidean` (returns the distance [B, 1]) or `l1` (returns |e1 - e2| [B, D],
            to be followed by a dense sigmoid layer giving P(same class)).
    """

    def __init__(self, head="euclidean", **kwargs):
        super().__init__(**kwargs)
        if head not in ("euclidean", "l1"):
            raise ValueError(f"`head` must be one of euclidean, l1. Received: {head!r}")
        self.head = head

    def call(self, first, second):
        difference = ops.cast(first, "float32") - ops.cast(second, "float32")
        if self.head == "l1":
            return ops.abs(difference)
        return safe_sqrt(ops.sum(ops.square(difference), axis=-1, keepdims=True))

    def compute_output_shape(self, first_shape, second_shape=None):
        return first_shape if self.head == "l1" else (first_shape[0], 1)

    def get_config(self):
        config = super().get_config()
        config.update({"head": self.head})
        return config
