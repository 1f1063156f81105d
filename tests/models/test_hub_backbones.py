"""The keras-hub backbones (DINOv2, SigLIP): build, train with the triplet loss and a smaller
backbone learning rate, save and reload in safe mode; freezing by transformer blocks; presets
(loaded, resized, refused, or missing offline: one line), with keras-hub's loaders replaced.

The full ViT-S/B take 30-45 s each to build, train two compiled steps and save on two CPU cores, so
most tests shrink `hub.ARCHITECTURES` to 2-3 blocks of width 32 (same patch sizes and code);
`test_architectures_match_the_presets` checks the real sizes against keras-hub's preset table.
"""

import ast
import inspect

import keras
import keras_hub
import numpy as np
import pytest

from embedding_net.errors import ModelFileError
from embedding_net.losses import TripletLoss
from embedding_net.models import build_embedding_model, get_backbone, hub, list_backbones
from embedding_net.models.layers import ImagePreprocessing, TokenPooling
from embedding_net.optim.multipliers import LearningRateMultipliers, backbone_multipliers

HUB_BACKBONES = [name for name in list_backbones() if get_backbone(name).builder.__module__ == hub.__name__]
LABELS = np.repeat(np.arange(4), 2).astype("int32")  # P x K = 4 classes x 2 images


def tiny(monkeypatch, name, num_layers=2):
    """Shrinks backbone `name` to `num_layers` blocks of width 32 for this test."""
    architecture = dict(hub.ARCHITECTURES[name], num_layers=num_layers, hidden_dim=32, num_heads=2,
                        intermediate_dim=64)
    monkeypatch.setitem(hub.ARCHITECTURES, name, architecture)
    return architecture


def images(count, side, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype=np.uint8)


def test_the_hub_backbones_are_registered_without_importing_keras_hub():
    assert {"dinov2_small", "dinov2_base", "siglip_base"} <= set(HUB_BACKBONES)
    # keras-hub takes seconds to import: hub.py imports it inside the builders only (a
    # subprocess import check would cost ~9 s of the suite; the module's own imports are
    # what could break it).
    tree = ast.parse(inspect.getsource(hub))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top_level for alias in node.names] + [
        node.module for node in top_level if isinstance(node, ast.ImportFrom)]
    assert names and not any("keras_hub" in name for name in names)


@pytest.mark.parametrize("name", HUB_BACKBONES)
def test_trains_with_a_backbone_multiplier_saves_and_reloads(name, monkeypatch, tmp_path):
    architecture = tiny(monkeypatch, name)
    side = get_backbone(name).min_input_size
    keras.utils.set_random_seed(0)
    model = build_embedding_model(name, (side, side, 3), embedding_size=16, weights=None)
    tower = model.get_layer(name)
    assert tuple(tower.output.shape) == (None, 1, 1, architecture["hidden_dim"])
    multipliers = backbone_multipliers(tower, multiplier=0.1, blocks=hub.transformer_blocks(tower), layer_decay=0.5)
    model.compile(optimizer=LearningRateMultipliers(keras.optimizers.Adam(1e-3), multipliers),
                  loss=TripletLoss(margin=0.5, mining="all"), run_eagerly=True)
    before = [v.numpy().copy() for v in model.trainable_variables]
    data = images(8, side)
    losses = [float(model.train_on_batch(data, LABELS)) for _ in range(2)]  # fit() costs 2.5 s more
    assert np.all(np.isfinite(losses)) and losses[0] > 0
    moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert all(moved)  # every block, the head and the projection train
    embeddings = keras.ops.convert_to_numpy(model(data))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(data)), embeddings, atol=1e-6)


@pytest.mark.parametrize("name", HUB_BACKBONES)
def test_freeze_counts_transformer_blocks(name, monkeypatch):
    tiny(monkeypatch, name, num_layers=3)
    side = get_backbone(name).min_input_size

    def trainable(freeze):
        model = build_embedding_model(name, (side, side, 3), embedding_size=4, freeze=freeze)
        units = hub.transformer_blocks(model.get_layer(name))
        paths = {v.path for v in model.trainable_variables}
        return [bool({v.path for v in unit.trainable_weights} & paths) for unit in units], paths

    # units: [patch embedding, block 0, block 1, block 2]
    assert trainable(1)[0] == [False, False, False, True]
    assert trainable(3)[0] == [False, True, True, True]
    assert trainable(4)[0] == [True, True, True, True]
    for frozen in (0, "all"):
        units, paths = trainable(frozen)
        assert units == [False] * 4 and paths == {"projection/kernel", "projection/bias"}
    last_only = trainable(1)[1]
    # What follows the last block trains with it (DINOv2's final norm, SigLIP's pooling head).
    assert any("layernorm" in path or "post_layer_norm" in path for path in last_only)


def test_position_embeddings_and_mask_token_do_not_train(monkeypatch):
    # keras-hub 0.32 would drop trained DINOv2 position embeddings on save (see hub._dinov2).
    tiny(monkeypatch, "dinov2_small")
    tower = build_embedding_model("dinov2_small", (28, 28, 3), 4).get_layer("dinov2_small")
    paths = {v.path for v in tower.trainable_variables}
    assert not any("position_embeddings" in path or "mask_token" in path for path in paths)
    assert any("cls_token" in path for path in paths)


@pytest.mark.parametrize("name, shape", [("dinov2_small", (30, 30, 3)), ("dinov2_small", (28, 56, 3)),
                                         ("siglip_base", (40, 40, 3))])
def test_sizes_that_drop_pixels_or_are_not_square_are_refused(name, shape):
    with pytest.raises(ValueError, match=f"multiple of .*Received: {shape[0]}x{shape[1]}"):
        build_embedding_model(name, shape, 4)


def test_architectures_match_the_presets():
    # keras-hub's preset table counts the 518 px model's parameters; ours at 518 px must agree
    # (the position table is held twice, as trained and as interpolated to the input size).
    # ViT-B/14 only by its published sizes: building it costs 5 s of the suite.
    from keras_hub.src.models.dinov2.dinov2_presets import backbone_presets

    backbone = keras_hub.models.DINOV2Backbone(**hub.ARCHITECTURES["dinov2_small"], image_shape=(518, 518, 3))
    assert backbone.count_params() == backbone_presets["dinov2_small"]["metadata"]["params"] == 22_582_656
    vit_b = {"num_layers": 12, "hidden_dim": 768, "num_heads": 12, "intermediate_dim": 3072}
    assert hub.ARCHITECTURES["dinov2_base"] == {"patch_size": 14, **vit_b}
    assert hub.ARCHITECTURES["siglip_base"] == {"patch_size": 16, **vit_b}
    for name, loader in (("dinov2_small", keras_hub.models.DINOV2Backbone),
                         ("dinov2_base", keras_hub.models.DINOV2Backbone),
                         ("siglip_base", keras_hub.models.SigLIPBackbone)):
        assert get_backbone(name).pretrained == (hub.PRESETS[name],)
        assert hub.PRESETS[name] in loader.presets


@pytest.mark.parametrize("name, mean, std", [("dinov2_small", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                             ("dinov2_base", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                             ("siglip_base", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_preprocessing_is_the_presets(name, mean, std):
    # The image processors the presets were trained with: x / 255, then (x - mean) / std.
    pixels = images(2, 4)
    expected = (pixels / 255.0 - np.array(mean)) / np.array(std)
    got = ImagePreprocessing(mode=get_backbone(name).preprocessing)(pixels)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, loader", [("dinov2_small", keras_hub.models.DINOV2Backbone),
                                          ("siglip_base", keras_hub.models.SigLIPBackbone)])
def test_a_preset_that_cannot_be_fetched_is_one_line(name, loader, monkeypatch):
    import requests

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("HTTPSConnectionPool(host='api.kaggle.com', port=443):\nMax retries")

    monkeypatch.setattr(loader, "from_preset", offline)
    preset = hub.PRESETS[name]
    with pytest.raises(ModelFileError) as info:
        build_embedding_model(name, (224, 224, 3), 4, weights=preset)
    message = str(info.value)
    assert "\n" not in message
    assert f"cannot fetch keras-hub preset {preset!r} (ConnectionError)" in message
    assert f"{loader.__name__}.from_preset('{preset}')" in message and "kagglehub" in message


def test_dinov2_preset_is_loaded_at_the_input_size(monkeypatch):
    architecture = tiny(monkeypatch, "dinov2_small")
    calls = []

    def from_preset(preset, **overrides):
        calls.append((preset, overrides))
        backbone = keras_hub.models.DINOV2Backbone(**architecture, **overrides)
        backbone.embeddings.cls_token.assign(np.full((1, 1, 32), 0.25, "float32"))
        return backbone

    monkeypatch.setattr(keras_hub.models.DINOV2Backbone, "from_preset", from_preset)
    tower = build_embedding_model("dinov2_small", (56, 56, 3), 4, weights="dinov2_small").get_layer("dinov2_small")
    assert calls == [("dinov2_small", {"image_shape": (56, 56, 3), "name": "dinov2_small_backbone"})]
    cls_token = [v for v in tower.weights if v.path.endswith("cls_token")][0]
    np.testing.assert_array_equal(cls_token.numpy(), 0.25)
    # A preset of another architecture is refused rather than half-loaded.
    monkeypatch.setitem(hub.ARCHITECTURES, "dinov2_small", dict(architecture, num_layers=3))
    with pytest.raises(ModelFileError, match="does not hold the architecture of backbone 'dinov2_small'"):
        build_embedding_model("dinov2_small", (56, 56, 3), 4, weights="dinov2_small")


def test_siglip_preset_is_copied_with_resized_position_embeddings(monkeypatch):
    architecture = tiny(monkeypatch, "siglip_base")
    keras.utils.set_random_seed(1)
    source = keras_hub.models.SigLIPVisionEncoder(**architecture, image_shape=(64, 64, 3))  # a 4x4 grid

    class Preset:
        vision_encoder = source

    monkeypatch.setattr(keras_hub.models.SigLIPBackbone, "from_preset", lambda preset: Preset)
    tower = build_embedding_model("siglip_base", (32, 32, 3), 4, weights="siglip_base_patch16_224").get_layer(
        "siglip_base")
    backbone = tower.layers[1]
    assert len(backbone.weights) == len(source.weights)
    for variable, target in zip(source.weights, backbone.weights):
        key = variable.path.split("/", 1)[1]
        if key == "position_embedding/embeddings":  # 16 positions -> the 2x2 grid of 32 px
            expected = keras.ops.convert_to_numpy(hub._resized_positions(variable.value, 2))
            assert expected.shape == (4, 32)
            grid = variable.numpy().reshape(4, 4, 32)
            np.testing.assert_allclose(expected.mean(axis=0), grid.mean(axis=(0, 1)), atol=0.2)
        elif key == "position_ids":
            expected = np.arange(4)[None]
        else:
            expected = variable.numpy()
        np.testing.assert_allclose(target.numpy(), expected, err_msg=key)


def test_token_pooling_modes_and_config():
    tokens = np.random.default_rng(0).normal(size=(2, 5, 3)).astype("float32")
    first = TokenPooling(mode="class")(tokens)
    np.testing.assert_allclose(first, tokens[:, None, None, 0])
    mean = TokenPooling(mode="mean", prefix_tokens=2)(tokens)
    np.testing.assert_allclose(mean, tokens[:, 2:].mean(axis=1)[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(TokenPooling(mode="pooled")(tokens[:, 0]), first)
    layer = TokenPooling.from_config(TokenPooling(mode="mean", prefix_tokens=3).get_config())
    assert (layer.mode, layer.prefix_tokens) == ("mean", 3)
    with pytest.raises(ValueError, match="Received: 'cls'"):
        TokenPooling(mode="cls")
