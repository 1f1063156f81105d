"""TensorBoard: a tiny run leaves scalars TensorBoard reads back as history.csv has them, and a
projector run that TensorBoard's own projector plugin serves: the val embeddings of the model,
one metadata row and one sprite tile per point."""

import csv
import dataclasses
import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins import base_plugin, projector
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
from werkzeug.test import Client

from helpers import tiny_overrides
from embedding_net.config.loading import load_config
from embedding_net.data.images import read_images
from embedding_net.models.builders import load_embedding_model
from embedding_net.training import data as training_data
from embedding_net.training import runner as training
from embedding_net.training.tensorboard import TENSOR_NAME, tensorboard_callbacks, write_run_tensorboard
from embedding_net.viz.sprites import sprite_image, stratified_subsample


@pytest.fixture(scope="module")
def tiny_run(omniglot_subset, tmp_path_factory):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path_factory.mktemp("runs")))
    metrics = training.run(config)
    return config, metrics, os.path.join(config.run_dir, "logs")


def _scalars(folder):
    """{tag: [(step, value)]} of the event files in `folder`."""
    events = EventAccumulator(folder, size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [(event.step, float(tf.make_ndarray(event.tensor_proto))) for event in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}


def test_epoch_scalars_match_the_history(tiny_run):
    config, _, logs = tiny_run
    train, validation = _scalars(os.path.join(logs, "train")), _scalars(os.path.join(logs, "validation"))
    with open(os.path.join(config.run_dir, "history.csv")) as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == config.train.epochs
    # loss, learning rate, the collapse monitors and their val_ twins: every column, every epoch.
    assert {"loss", "learning_rate", "positive_distance", "negative_distance", "val_loss"} <= set(history[0])
    for column in set(history[0]) - {"epoch"}:
        scalars = validation if column.startswith("val_") else train
        tag = "epoch_" + column.removeprefix("val_")
        assert [step for step, _ in scalars[tag]] == list(range(config.train.epochs)), tag
        np.testing.assert_allclose([value for _, value in scalars[tag]],
                                   [float(row[column]) for row in history], rtol=1e-5, err_msg=tag)
    assert not any(tag.startswith("batch_") for tag in train)  # nothing per step


def test_final_metrics_are_scalars_at_the_last_epoch(tiny_run):
    config, metrics, logs = tiny_run
    final = _scalars(os.path.join(logs, "evaluation"))
    with open(os.path.join(config.run_dir, "metrics.json")) as handle:
        saved = json.load(handle)
    numbers = {name for name, value in saved.items() if isinstance(value, int | float) and not isinstance(value, bool)}
    assert {"top1_accuracy", "map_at_r"} <= numbers
    assert set(final) == {f"final/{name}" for name in numbers}
    for name in numbers:
        assert final[f"final/{name}"] == [(config.train.epochs - 1, pytest.approx(saved[name], rel=1e-6))]


def test_projector_holds_the_val_embeddings_of_the_model(tiny_run):
    config, _, logs = tiny_run
    folder = os.path.join(logs, "projector")
    with open(os.path.join(folder, "projector_config.pbtxt")) as handle:
        settings = text_format.Parse(handle.read(), projector.ProjectorConfig())
    (embedding,) = settings.embeddings
    assert embedding.tensor_name == TENSOR_NAME
    values = tf.train.load_checkpoint(tf.train.latest_checkpoint(folder)).get_tensor(TENSOR_NAME)
    with open(os.path.join(folder, embedding.metadata_path), encoding="utf-8") as handle:
        rows = [line.rstrip("\n").split("\t") for line in handle]
    assert rows[0] == ["class", "image"] and len(rows) == len(values) + 1
    val_root = os.path.join(config.data.root, config.data.val_split)
    assert len(values) == sum(len(files) for _, _, files in os.walk(val_root))  # 520 < the 10,000 cap
    assert all(name.split(os.sep)[0] == label for label, name in rows[1:])  # class = its folder
    # The tensor is the model's embedding of each image the metadata names, in that order.
    height, width, channels = config.model.input_shape
    images, failed = read_images([os.path.join(val_root, name) for _, name in rows[1:]], (height, width), channels)
    assert not failed
    model = load_embedding_model(os.path.join(config.run_dir, "model.keras"))
    np.testing.assert_allclose(values, model.predict(images, verbose=0), atol=1e-5)
    # The sprite: one tile per point, row-major in a near-square grid, tiles at the input size.
    assert list(embedding.sprite.single_image_dim) == [width, height]
    columns = int(np.ceil(np.sqrt(len(values))))
    sprite = tf.io.decode_png(tf.io.read_file(os.path.join(folder, embedding.sprite.image_path))).numpy()
    assert sprite.shape == (int(np.ceil(len(values) / columns)) * height, columns * width, channels)
    np.testing.assert_array_equal(sprite[:height, width:2 * width], images[1])


def test_tensorboard_projector_plugin_serves_the_run(tiny_run):
    _, _, logs = tiny_run
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logs)
    multiplexer.Reload()
    plugin = ProjectorPlugin(base_plugin.TBContext(
        logdir=logs, multiplexer=multiplexer, data_provider=data_provider.MultiplexerDataProvider(multiplexer, logs)))
    apps = plugin.get_plugin_apps()
    assert json.loads(Client(apps["/runs"]).get("/runs").data) == ["projector"]
    info = json.loads(Client(apps["/info"]).get("/info?run=projector").data)
    (embedding,) = info["embeddings"]
    assert embedding["tensorName"] == TENSOR_NAME and embedding["tensorShape"][1] == 16
    sprite = Client(apps["/sprite_image"]).get(f"/sprite_image?run=projector&name={TENSOR_NAME}")
    assert sprite.status_code == 200 and sprite.data[:8] == b"\x89PNG\r\n\x1a\n"


def test_images_read_from_disk_give_the_same_projector(tiny_run, tmp_path):
    config, metrics, _ = tiny_run
    split = config.data.val_split
    folder, images = training_data.load_split(config, split, min_images_per_class=1)
    assert images is not None  # the tiny run's split sits in memory; streamed, it is read again
    embeddings = np.random.default_rng(0).normal(size=(len(folder), 4)).astype(np.float32)
    projectors = []
    for name, cached in (("memory", images), ("disk", None)):
        moved = dataclasses.replace(config, output=dataclasses.replace(config.output, work_dir=str(tmp_path / name)))
        write_run_tensorboard(moved, {split: (folder, cached)}, {split: embeddings}, metrics)
        projectors.append(os.path.join(moved.run_dir, "logs", "projector"))
    for name in ("sprite.png", "metadata.tsv"):
        with open(os.path.join(projectors[0], name), "rb") as memory, open(os.path.join(projectors[1], name), "rb") as disk:
            assert memory.read() == disk.read(), name


def test_workers_other_than_the_chief_write_no_logs(tmp_path):
    config = types.SimpleNamespace(run_dir=str(tmp_path), output=types.SimpleNamespace())
    assert tensorboard_callbacks(config, chief=False, resumed=0) == []
    config.output.tensorboard = False
    assert tensorboard_callbacks(config, chief=True, resumed=0) == []
    config.output.tensorboard = True
    assert [type(callback).__name__ for callback in tensorboard_callbacks(config, True, 0)] == ["EpochTensorBoard"]


def test_stratified_subsample_keeps_each_class_share():
    labels = np.repeat(np.arange(5), [1, 9, 90, 300, 600])
    chosen = stratified_subsample(labels, 100, seed=3)
    assert len(chosen) == 100 and np.all(np.diff(chosen) > 0)
    counts = np.bincount(labels[chosen], minlength=5)
    np.testing.assert_allclose(counts, [0.1, 0.9, 9, 30, 60], atol=1)
    np.testing.assert_array_equal(chosen, stratified_subsample(labels, 100, seed=3))
    assert not np.array_equal(chosen, stratified_subsample(labels, 100, seed=4))
    np.testing.assert_array_equal(stratified_subsample(labels[:50], 100), np.arange(50))


def test_sprite_places_tiles_row_major_and_fits_the_limit():
    images = np.random.default_rng(0).integers(0, 256, (10, 4, 6, 3), np.uint8)
    sprite, tile = sprite_image(images)
    assert tile == (4, 6) and sprite.shape == (3 * 4, 4 * 6, 3)  # 4 columns, 3 rows
    for index, image in enumerate(images):
        row, column = divmod(index, 4)
        np.testing.assert_array_equal(sprite[row * 4:(row + 1) * 4, column * 6:(column + 1) * 6], image)
    assert np.all(sprite[8:, 12:] == 255)  # the two cells after the last image
    many = np.zeros((50, 100, 100, 1), np.uint8)
    sprite, tile = sprite_image(many, max_tile=64, max_side=40)  # 8 x 7 tiles in 40 pixels
    assert tile == (5, 5) and sprite.shape == (35, 40, 1)
    assert sprite_image(many[:4])[1] == (64, 64)  # shrunk to max_tile
