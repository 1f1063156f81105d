"""The embedding model: raw uint8 images in, unit-length embeddings out."""

import os

import keras

from embedding_net.errors import ModelFileError
from embedding_net.models.backbones import build_backbone, fan_in_uniform, get_backbone
from embedding_net.models.layers import GeneralizedMeanPooling, ImagePreprocessing, L2Normalization

POOLINGS = ("avg", "max", "gem")


def build_embedding_model(
    backbone="conv4",
    input_shape=(28, 28, 1),
    embedding_size=64,
    weights=None,
    pooling="avg",
    invert=False,
    freeze=None,
    name="embedding_model",
):
    """Builds backbone -> global pooling -> dense projection -> L2 normalisation.

    The model takes raw uint8 images of `input_shape` and preprocesses them itself, so a saved
    model needs nothing else to embed an image. There is no ReLU before the normalisation: it
    would confine embeddings to one orthant of the sphere.

    Args:
        backbone: a name from `embedding_net.models.backbones.list_backbones()`.
        input_shape: (height, width, channels) of the raw images, channels 1 or 3.
        embedding_size: the dimension D of the embeddings.
        weights: None, a pretrained name the backbone offers (e.g. `imagenet`), or the path of
            a `.keras` / `.weights.h5` file of an embedding model of the same architecture
            (to fine-tune an earlier run).
        pooling: `avg`, `max` or `gem` (generalised mean, learned exponent) global pooling of
            the feature map.
        invert: feed 255 - pixel to the backbone (for dark-on-light images such as scans
            of handwriting).
        freeze: None (train everything), `"all"` (freeze the backbone) or an integer N (freeze
            all backbone layers but the last N; for the keras-hub transformers, N counts
            transformer blocks: `embedding_net.models.hub.freeze_blocks`). Frozen batch
            normalisation runs in inference mode. The head always trains.

    Returns:
        A `keras.Model` mapping uint8 [B, H, W, C] to float32 [B, D] of unit norm.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {', '.join(POOLINGS)}. Received: {pooling!r}")
    if embedding_size < 1:
        raise ValueError(f"`embedding_size` must be >= 1. Received: {embedding_size!r}")
    spec = get_backbone(backbone)
    height, width, channels = input_shape
    backbone_channels = 3 if spec.rgb else channels
    inputs = keras.Input((height, width, channels), dtype="uint8", name="image")
    x = ImagePreprocessing(mode=spec.preprocessing, output_channels=backbone_channels,
                           invert=invert, name="preprocessing")(inputs)
    weights_file = weights if weights is not None and weights not in spec.pretrained else None
    tower = build_backbone(backbone, (height, width, backbone_channels), None if weights_file else weights)
    _freeze(tower, freeze, getattr(spec.builder, "freeze", None))
    x = tower(x)
    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="pooling")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="pooling")(x)
    else:
        x = GeneralizedMeanPooling(name="pooling")(x)
    x = keras.layers.Dense(embedding_size, kernel_initializer=fan_in_uniform(), name="projection")(x)
    outputs = L2Normalization(name="l2_normalization")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weights_file is not None:
        if not os.path.isfile(weights_file):
            raise ModelFileError(f"weights file not found: {weights_file}")
        try:
            model.load_weights(weights_file)
        except Exception as error:  # shape or format mismatch: all mean "not this architecture"
            raise ModelFileError(f"cannot load weights {weights_file} into {backbone}: "
                                 f"{str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}") from None
    return model


def _freeze(tower, freeze, freeze_blocks=None):
    if freeze is None or freeze == "none":
        return
    if freeze == "all":
        tower.trainable = False
        return
    if isinstance(freeze, bool) or not isinstance(freeze, int) or freeze < 0:
        raise ValueError(f"`freeze` must be None, 'all' or an integer >= 0. Received: {freeze!r}")
    if freeze_blocks is not None:  # a backbone whose builder counts N its own way (transformer blocks)
        freeze_blocks(tower, freeze)
        return
    frozen = tower.layers[: max(len(tower.layers) - freeze, 0)]
    for layer in frozen:
        layer.trainable = False


def load_embedding_model(path):
    """Loads a saved `.keras` embedding model in safe mode (no arbitrary code is run).

    Raises:
        ModelFileError: the file is missing, is not a Keras model, or needs unsafe loading.
    """
    if not os.path.isfile(path):
        raise ModelFileError(f"model file not found: {path}")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises many types for a bad file; all mean the same here
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"cannot load model {path}: {reason}") from None
