"""Foundation image backbones from keras-hub, registered like every other backbone: `dinov2_small`
(ViT-S/14) and `dinov2_base` (ViT-B/14) of DINOv2 (Oquab et al. 2023), and `siglip_base`, the
ViT-B/16 image tower of SigLIP (Zhai et al. 2023).

Each tower maps float images [B, S, S, 3] to a 1x1 feature map [B, 1, 1, D] of the vector the
model was trained to produce (the class token of DINOv2, the attention-pooling head of SigLIP),
so the embedding head (pooling `avg`, projection, L2 normalisation) applies unchanged.

`weights` is None (random initialisation from the presets' architecture) or the keras-hub preset
name, downloaded from Kaggle on first use into ~/.cache/kagglehub (or `$KAGGLEHUB_CACHE`); a
copy of that cache works offline. The builders also take a local preset folder
(`backbone.save_to_preset(folder)`), though `build_backbone` passes registered names only.
keras-hub is imported only when a tower is built: importing it takes seconds, and
`import embedding_net.models` must not pay that for a ResNet.

`freeze: N` counts transformer blocks here, not layers: see `freeze_blocks`.
"""

import os

import keras
from keras import ops

from embedding_net.errors import ModelFileError
from embedding_net.models.backbones import register_backbone
from embedding_net.models.layers import TokenPooling

# The presets' architectures (keras-hub 0.32, converted from Hugging Face facebook/dinov2-small,
# facebook/dinov2-base and google/siglip-base-patch16-224): random weights are built from these,
# and a preset that does not match them is refused, so a model fine-tuned from a preset and one
# built with `weights: null` (to load a saved run into) always have the same variables. The
# builders read this table when called, so tests swap in 2-block, 32-wide variants.
ARCHITECTURES = {
    "dinov2_small": {"patch_size": 14, "num_layers": 12, "hidden_dim": 384, "num_heads": 6,
                     "intermediate_dim": 1536},
    "dinov2_base": {"patch_size": 14, "num_layers": 12, "hidden_dim": 768, "num_heads": 12,
                    "intermediate_dim": 3072},
    "siglip_base": {"patch_size": 16, "num_layers": 12, "hidden_dim": 768, "num_heads": 12,
                    "intermediate_dim": 3072},
}
PRESETS = {"dinov2_small": "dinov2_small", "dinov2_base": "dinov2_base", "siglip_base": "siglip_base_patch16_224"}


def _check_image_shape(name, input_shape, patch_size):
    """The side S of the square input: keras-hub's ViTs need square images, and a side that is
    not a multiple of the patch size would silently drop the last S mod patch rows and columns."""
    height, width = input_shape[0], input_shape[1]
    if height != width or height % patch_size:
        examples = ", ".join(str(patch_size * n) for n in (4, 8, 16))
        raise ValueError(f"backbone {name!r} needs square inputs whose side is a multiple of {patch_size} "
                         f"(e.g. {examples}). Received: {height}x{width}")
    return height


def _from_preset(preset_class, preset, **overrides):
    """`preset_class.from_preset(preset)`; any failure (no network, a missing or partial
    download, a wrong folder) is one `ModelFileError` line saying how to get the preset."""
    try:
        return preset_class.from_preset(preset, **overrides)
    except Exception as error:  # requests, kagglehub and keras-hub raise many types; all mean this
        if os.path.isdir(preset):
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelFileError(f"cannot load keras-hub preset folder {preset}: {reason}") from None
        raise ModelFileError(
            f"cannot fetch keras-hub preset {preset!r} ({type(error).__name__}): on a connected machine run "
            f"python -c \"import keras_hub; keras_hub.models.{preset_class.__name__}.from_preset('{preset}')\" "
            "and copy ~/.cache/kagglehub to this machine (or point $KAGGLEHUB_CACHE to the copy)") from None


def _check_architecture(name, preset, backbone):
    expected = ARCHITECTURES[name]
    found = {key: backbone.get_config()[key] for key in expected}
    if found != expected:
        raise ModelFileError(f"keras-hub preset {preset!r} does not hold the architecture of backbone "
                             f"{name!r} ({expected}). Received: {found}")


def _dinov2(name, side, weights):
    import keras_hub

    if weights is None:
        backbone = keras_hub.models.DINOV2Backbone(**ARCHITECTURES[name], image_shape=(side, side, 3),
                                                  name=f"{name}_backbone")
    else:  # keras-hub interpolates the 518 px position embeddings to `image_shape` (bicubic)
        backbone = _from_preset(keras_hub.models.DINOV2Backbone, weights, image_shape=(side, side, 3),
                                name=f"{name}_backbone")
        _check_architecture(name, weights, backbone)
    embeddings = backbone.embeddings
    # keras-hub 0.32 writes trained position embeddings back into the saved 518 px table only
    # when the *signed* sum of their change is positive, so a .keras file may silently restore
    # the untrained ones: they stay as initialised (pretrained), which keeps saving exact.
    embeddings.interpolated_position_embeddings.trainable = False
    if embeddings.use_mask_token:  # used by DINOv2's masked pre-training only: no gradient here
        embeddings.mask_token.trainable = False
    prefix = 1 + backbone.num_register_tokens
    return backbone, TokenPooling(mode="class", prefix_tokens=prefix, name="token_pooling")


def _resized_positions(table, grid):
    """A [g * g, D] table of learned position embeddings resized to [grid * grid, D] (bicubic,
    as keras-hub interpolates DINOv2's), for SigLIP at another size than its preset's."""
    count, dim = table.shape
    side = int(round(count ** 0.5))
    image = ops.reshape(ops.cast(table, "float32"), (1, side, side, dim))
    image = ops.image.resize(image, (grid, grid), interpolation="bicubic", antialias=False)
    return ops.reshape(image, (grid * grid, dim))


def _siglip(name, side, weights):
    import keras_hub

    # SigLIP presets hold the image and the text towers; only the image tower is kept, copied
    # into one built for this input size (its position table resized: keras-hub does not).
    source = None
    if weights is not None:
        source = _from_preset(keras_hub.models.SigLIPBackbone, weights).vision_encoder
        _check_architecture(name, weights, source)
    backbone = keras_hub.models.SigLIPVisionEncoder(**ARCHITECTURES[name], image_shape=(side, side, 3),
                                                    name=f"{name}_backbone")
    if source is not None:
        grid = side // ARCHITECTURES[name]["patch_size"]
        for source_variable, variable in zip(source.weights, backbone.weights, strict=True):
            if "position_ids" in variable.path:  # the indices 0..grid^2-1, already right
                continue
            value = source_variable.value
            if tuple(source_variable.shape) != tuple(variable.shape):
                value = _resized_positions(value, grid)
            variable.assign(value)
    return backbone, TokenPooling(mode="pooled", name="token_pooling")


_FAMILIES = {"dinov2": _dinov2, "siglip": _siglip}


def _hub_builder(name, family):
    def builder(input_shape, weights=None):
        """Float images [B, S, S, 3] -> [B, 1, 1, D]; `weights`: None or the keras-hub preset."""
        side = _check_image_shape(name, input_shape, ARCHITECTURES[name]["patch_size"])
        backbone, pooling = _FAMILIES[family](name, side, weights)
        inputs = keras.Input((side, side, 3), name="images")
        outputs = pooling(backbone({"images": inputs}))
        return keras.Model(inputs, outputs, name=name)

    builder.freeze = freeze_blocks  # read by builders._freeze: N counts blocks, not layers
    return builder


def _hub_backbone(tower):
    """The keras-hub backbone inside a tower built here (the only layer holding blocks)."""
    for layer in tower.layers:
        if hasattr(layer, "encoder") or hasattr(layer, "encoder_layers"):
            return layer
    raise ValueError(f"{tower.name!r} is not a keras-hub tower of embedding_net.models.hub. "
                     f"Received layers: {[layer.name for layer in tower.layers]}")


def transformer_blocks(tower):
    """The tower's trainable units from the input up: [patch embedding, block 0, ..., block L-1].

    What follows the last block (the final layer normalisation, SigLIP's pooling head) is not
    listed: it belongs with the top of the network. `freeze_blocks` and the layer-wise learning
    rate decay of `embedding_net.optim.multipliers` count depths along this list.
    """
    backbone = _hub_backbone(tower)
    if hasattr(backbone, "encoder"):  # DINOv2
        return [backbone.embeddings, *backbone.encoder.layers]
    return [backbone.embedding, *backbone.encoder_layers]  # SigLIP


def freeze_blocks(tower, blocks):
    """`model.freeze: N` for transformer towers. N counts along `transformer_blocks(tower)`:
    the last N blocks train, with what follows them (final normalisation, pooling head), and
    the earlier blocks and the patch embedding are frozen. N = 0 freezes the whole tower (like
    `all`); N = L (12 blocks here) trains every block; N > L trains the patch embedding too.

    Counting blocks, not Keras layers, is what makes N mean something here: the whole keras-hub
    backbone is one layer of the tower.
    """
    if blocks == 0:
        tower.trainable = False
        return
    units = transformer_blocks(tower)
    for layer in units[: max(len(units) - blocks, 0)]:
        layer.trainable = False


# Preprocessing as the presets were trained: DINOv2 takes ImageNet mean / std ("torch"), SigLIP
# x / 127.5 - 1 ("tf"). The smallest sizes are 2x2 patches.
_DINOV2_NOTES = ("square inputs, side a multiple of 14 (e.g. 112, 224: 256 patches); the preset's 518 px "
                 "position embeddings are interpolated to the input size and kept frozen; use pooling avg")
register_backbone("dinov2_small", "torch", 28, rgb=True, pretrained=(PRESETS["dinov2_small"],),
                  notes=_DINOV2_NOTES)(_hub_builder("dinov2_small", "dinov2"))
register_backbone("dinov2_base", "torch", 28, rgb=True, pretrained=(PRESETS["dinov2_base"],),
                  notes=_DINOV2_NOTES)(_hub_builder("dinov2_base", "dinov2"))
register_backbone("siglip_base", "tf", 32, rgb=True, pretrained=(PRESETS["siglip_base"],),
                  notes="square inputs, side a multiple of 16 (e.g. 128, 224: 196 patches); pretrained at "
                        "224 px, other sizes get its position embeddings resized (bicubic); use pooling avg",
                  )(_hub_builder("siglip_base", "siglip"))
