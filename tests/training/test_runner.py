"""End to end in-process: a tiny run writes every promised file with sane contents."""

import csv
import json
import os
import zipfile

import numpy as np
import pytest

from helpers import tiny_overrides
from embedding_net.config.loading import load_config
from embedding_net.inference.encodings import load_encodings
from embedding_net.errors import ConfigError, DatasetError
from embedding_net.models.builders import load_embedding_model
from embedding_net.optim.radam import RAdam
from embedding_net.viz.reports import tsne_subsample
from embedding_net.training import runner as training
from embedding_net.training import data as training_data
from embedding_net.training import setup as training_setup
from embedding_net.losses.contrastive import BatchContrastiveLoss


@pytest.fixture(scope="module")
def tiny_run(omniglot_subset, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("runs")
    config = load_config(None, tiny_overrides(omniglot_subset, work_dir, plots=True))
    metrics = training.run(config)
    return config, metrics


def test_run_writes_the_contract_files(tiny_run):
    config, metrics = tiny_run
    for name in ("model.keras", "encodings.npz", "config.yml", "metrics.json", "history.csv",
                 "checkpoints/last.keras", "checkpoints/best.keras", "per_class_accuracy.csv",
                 "confusion_matrix.csv",
                 "plots/tsne_before.png", "plots/tsne_before.html", "plots/tsne_after.png",
                 "plots/tsne_after.html", "plots/curves.png", "plots/neighbours.png", "plots/batch.png"):
        assert os.path.isfile(os.path.join(config.run_dir, name)), name
    for name in ("tsne_before.png", "tsne_after.png", "curves.png", "neighbours.png", "batch.png"):
        with open(os.path.join(config.run_dir, "plots", name), "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", name
    with open(os.path.join(config.run_dir, "metrics.json")) as handle:
        saved = json.load(handle)
    assert saved == metrics
    for key in ("top1_accuracy", "top5_accuracy", "oneshot_accuracy", "precision_at_1", "r_precision",
                "map_at_r", "knn5_accuracy", "centroid_accuracy", "episodes_20way_1shot",
                "episodes_5way_1shot", "roc_auc", "eer", "verification_accuracy"):
        assert 0.0 <= saved[key] <= 1.0, key
    encodings = load_encodings(os.path.join(config.run_dir, "encodings.npz"))
    assert encodings.metadata["threshold"] == pytest.approx(saved["threshold"])
    assert saved["top1_accuracy"] <= saved["top5_accuracy"]
    # The subset keeps exactly the official runs drawn from the Atlantean alphabet.
    from embedding_net.data.datasets.omniglot import ONESHOT_FILE, SOURCE_DIR

    with open(os.path.join(SOURCE_DIR, ONESHOT_FILE)) as handle:
        runs = json.load(handle)["runs"]
    atlantean = [run for run in runs if run["support"][0].startswith("Atlantean/")]
    assert atlantean and saved["oneshot_trials"] == 20 * len(atlantean)
    assert saved["protocol"] == "leave_one_out"
    assert saved["queries"] == 26 * 20
    assert saved["checkpoint_selection"] == "val"  # new classes: disclosed, not hidden


def test_resolved_config_reloads_equal(tiny_run):
    config, _ = tiny_run
    assert load_config(os.path.join(config.run_dir, "config.yml")) == config


def test_history_has_loss_and_learning_rate_per_epoch(tiny_run):
    config, _ = tiny_run
    with open(os.path.join(config.run_dir, "history.csv")) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == config.train.epochs
    assert {"loss", "val_loss", "learning_rate"} <= set(rows[0])
    assert all(np.isfinite(float(row["loss"])) for row in rows)


def test_encodings_cover_train_and_val_and_match_the_model(tiny_run):
    config, _ = tiny_run
    encodings = load_encodings(os.path.join(config.run_dir, "encodings.npz"))
    assert len(encodings.class_names) == 50 + 26
    assert encodings.embeddings.shape == (76 * 20, 16)
    assert encodings.centroids.shape == (76, 16)
    np.testing.assert_allclose(np.linalg.norm(encodings.embeddings, axis=1), 1.0, atol=1e-5)
    model_path = os.path.join(config.run_dir, "model.keras")
    with zipfile.ZipFile(model_path) as archive:  # exported without optimizer state
        assert not json.loads(archive.read("config.json")).get("compile_config")
    model = load_embedding_model(model_path)
    from embedding_net.data.images import read_image

    index = 1234
    image = read_image(encodings.paths[index], (28, 28), 1)
    np.testing.assert_allclose(model.predict(image[None], verbose=0)[0], encodings.embeddings[index], atol=1e-4)


def test_max_per_class_caps_the_reference(omniglot_subset, tmp_path):
    overrides = tiny_overrides(omniglot_subset, tmp_path) + [
        "encodings.max_per_class=3", "encodings.splits=[val]", "train.epochs=1"]
    config = load_config(None, overrides)
    training.run(config)
    encodings = load_encodings(os.path.join(config.run_dir, "encodings.npz"))
    assert len(encodings.class_names) == 26
    assert np.bincount(encodings.labels).tolist() == [3] * 26


def test_too_many_classes_per_batch_fails_before_training(omniglot_subset, tmp_path):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + ["data.classes_per_batch=51"])
    with pytest.raises(ConfigError, match="data.classes_per_batch.*51"):
        training.run(config)
    assert not os.path.exists(os.path.join(config.run_dir, "model.keras"))


def test_missing_data_root_is_a_dataset_error(tmp_path):
    config = load_config(None, [f"data.root={tmp_path / 'nothing'}", f"output.work_dir={tmp_path}"])
    with pytest.raises(DatasetError, match="nothing"):
        training.run(config)


@pytest.mark.parametrize("override, message", [
    ("model.weights=imagenet", "model.weights of backbone conv4 must be one of null, a .keras or .weights.h5 file, received: 'imagenet'"),
    ("model.weights=missing.weights.h5", "model.weights file not found: missing.weights.h5"),
    ("model.input_shape=[8,8,1]", "model.input_shape of backbone conv4 must be at least 16"),
])
def test_model_keys_are_checked_before_building(omniglot_subset, tmp_path, override, message):
    # (An unknown backbone name is refused by the config itself: tests/config.)
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [override])
    with pytest.raises(ConfigError, match=message):
        training.run(config)


def test_streaming_from_disk_trains_like_the_memory_cache(omniglot_subset, tmp_path, tiny_run):
    config_memory, metrics_memory = tiny_run
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + ["data.cache=none"])
    metrics = training.run(config)
    # Same pixels, same stateless batches, same seed: the same model, up to float rounding.
    for key in ("top1_accuracy", "top5_accuracy", "oneshot_accuracy"):
        assert metrics[key] == pytest.approx(metrics_memory[key], abs=0.02)
    memory = load_encodings(os.path.join(config_memory.run_dir, "encodings.npz"))
    streamed = load_encodings(os.path.join(config.run_dir, "encodings.npz"))
    assert streamed.paths == memory.paths
    np.testing.assert_allclose(streamed.embeddings, memory.embeddings, atol=1e-3)


def test_rotated_classes_train(omniglot_subset, tmp_path):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        "data.rotate_classes=true", "train.epochs=1"])
    metrics = training.run(config)
    assert 0.0 <= metrics["top1_accuracy"] <= 1.0
    bad = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        "data.rotate_classes=true", "data.cache=none"])
    with pytest.raises(ConfigError, match="data.rotate_classes"):
        training.run(bad)


def test_tsne_subsample_limits_classes_then_points():
    labels = np.repeat(np.arange(10), 5)
    chosen = tsne_subsample(labels, max_points=12, max_classes=3, seed=1)
    assert len(chosen) == 12 and np.all(np.diff(chosen) > 0)
    assert len(np.unique(labels[chosen])) <= 3
    assert np.array_equal(chosen, tsne_subsample(labels, 12, 3, seed=1))
    everything = tsne_subsample(labels, max_points=100, seed=0)
    assert np.array_equal(everything, np.arange(50))


def test_a_diverging_run_stops_with_a_message_and_writes_no_model(omniglot_subset, tmp_path):
    from embedding_net.errors import TrainingDivergedError

    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        "train.learning_rate=1e30", "train.optimizer=sgd", "train.lr_schedule=constant"])
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step \d+: train.learning_rate \(1e\+30\)"):
        training.run(config)
    assert not os.path.exists(os.path.join(config.run_dir, "model.keras"))
    assert not os.path.exists(os.path.join(config.run_dir, "checkpoints", "last.keras"))


def test_stop_on_non_finite_loss_records_the_step():
    import keras
    from keras import ops

    from embedding_net.training.callbacks import StopOnNonFiniteLoss

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    # The loss is finite while the weights are, and the huge learning rate breaks them at once.
    model.compile(optimizer=keras.optimizers.SGD(1e38), loss=lambda y, p: ops.mean(ops.square(p - y)) * 1e30)
    callback = StopOnNonFiniteLoss()
    x = np.ones((64, 2), "float32")
    model.fit(x, np.ones((64, 1), "float32"), batch_size=8, epochs=3, callbacks=[callback], verbose=0)
    assert callback.failed_step is not None and callback.failed_step[0] == 1


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_and_saves_a_float32_model(omniglot_subset, tmp_path, precision):
    import keras

    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path, export_litert=True) + [
        f"train.mixed_precision={precision}", "train.epochs=1"])
    metrics = training.run(config)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert np.isfinite(metrics["top1_accuracy"])
    with open(os.path.join(config.run_dir, "history.csv")) as handle:
        assert all(np.isfinite(float(row["loss"])) for row in csv.DictReader(handle))
    model = load_embedding_model(os.path.join(config.run_dir, "model.keras"))
    assert model.get_layer("projection").dtype_policy.name == f"mixed_{precision}"
    from embedding_net.data.images import read_image

    encodings = load_encodings(os.path.join(config.run_dir, "encodings.npz"))
    embedding = model.predict(read_image(encodings.paths[0], (28, 28), 1)[None], verbose=0)
    assert embedding.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embedding), 1.0, atol=1e-3)
    # The LiteRT copy for test.py computes in float32 (no half-precision division there).
    from embedding_net.inference.litert import LiteRTEmbeddingModel, fresh_litert_copy

    copy = LiteRTEmbeddingModel(fresh_litert_copy(os.path.join(config.run_dir, "model.keras")))
    tolerance = 0.05 if precision == "bfloat16" else 0.01  # bfloat16 keeps 8 bits of mantissa
    np.testing.assert_allclose(copy.predict(read_image(encodings.paths[0], (28, 28), 1)[None]), embedding,
                               atol=tolerance)


def test_contrastive_loss_trains(omniglot_subset, tmp_path):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        "loss.name=contrastive", "loss.positive_margin=0.1", "loss.negative_margin=0.9", "train.epochs=1"])
    assert isinstance(training_setup.build_loss(config.loss), BatchContrastiveLoss)
    soft = training_setup.build_loss(load_config(None, ["loss.soft_margin=true", "loss.mining=hard"]).loss)
    assert soft.soft_margin and soft.mining == "hard"
    metrics = training.run(config)
    assert 0.0 <= metrics["top1_accuracy"] <= 1.0
    with pytest.raises(ConfigError, match="loss.positive_margin must be below loss.negative_margin"):
        load_config(None, ["loss.positive_margin=1.0", "loss.negative_margin=0.5"])


def test_learning_rate_schedules():
    def rates(*overrides, steps=(0, 99, 100, 250, 999)):
        optimizer = training_setup.optimizer_from_config(load_config(None, [
            "train.epochs=10", "train.steps_per_epoch=100", "train.learning_rate=0.1", *overrides]).train)
        schedule = optimizer._learning_rate
        return [float(schedule(step)) if callable(schedule) else float(schedule) for step in steps]

    np.testing.assert_allclose(rates("train.lr_schedule=constant"), [0.1] * 5)
    # Step decay: x0.5 every 2 epochs (200 steps).
    np.testing.assert_allclose(rates("train.lr_schedule=step", "train.step_size=2"),
                               [0.1, 0.1, 0.1, 0.05, 0.1 * 0.5**4], rtol=1e-6)
    cosine = rates("train.lr_schedule=cosine")
    assert cosine[0] == pytest.approx(0.1) and cosine[-1] == pytest.approx(0.001, rel=0.05)
    assert cosine == sorted(cosine, reverse=True)
    warm = rates("train.lr_schedule=cosine", "train.warmup_epochs=1", steps=(0, 50, 100))
    assert warm[0] == pytest.approx(0.0) and warm[1] == pytest.approx(0.05) and warm[2] == pytest.approx(0.1)


def test_plateau_and_early_stopping_callbacks():
    import keras

    train = load_config(None, ["train.lr_schedule=plateau", "train.early_stopping_patience=3",
                               "train.decay_factor=0.2"]).train
    callbacks = training_setup.schedule_callbacks(train, "val_loss")
    plateau, stopping = callbacks
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau) and plateau.factor == 0.2
    assert isinstance(stopping, keras.callbacks.EarlyStopping) and stopping.patience == 3
    assert stopping.restore_best_weights
    assert training_setup.schedule_callbacks(load_config(None, []).train, "loss") == []
    with pytest.raises(ConfigError, match="train.decay_factor must be < 1, received: 1.5"):
        load_config(None, ["train.decay_factor=1.5"])


def test_plateau_schedule_trains(omniglot_subset, tmp_path):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        "train.lr_schedule=plateau", "train.plateau_patience=1", "train.early_stopping_patience=1",
        "train.epochs=3"])
    metrics = training.run(config)
    assert 0.0 <= metrics["top1_accuracy"] <= 1.0


def test_optimizer_options_reach_the_optimizers():
    sgd = training_setup.optimizer_from_config(load_config(None, [
        "train.optimizer=sgd", "train.momentum=0.8", "train.nesterov=true"]).train)
    assert sgd.momentum == pytest.approx(0.8) and sgd.nesterov is True
    adamw = training_setup.optimizer_from_config(load_config(None, ["train.optimizer=adamw", "train.weight_decay=0.01"]).train)
    assert adamw.weight_decay == pytest.approx(0.01)
    assert isinstance(training_setup.optimizer_from_config(load_config(None, ["train.optimizer=radam"]).train), RAdam)


def test_the_checkpoint_is_never_chosen_on_images_the_metrics_come_from(omniglot_subset, tmp_path):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        "data.dataset=null", "data.val_split=missing", "data.val_ratio=0.25"])
    splits = training_data.load_splits(config)
    (train, train_images), (held, held_images), what = training_data.selection_split(config, splits)
    assert what == "train_holdout"
    evaluated = set(splits["missing"][0].paths)
    assert not set(held.paths) & evaluated and not set(train.paths) & evaluated
    assert not set(held.paths) & set(train.paths)
    assert set(held.paths) | set(train.paths) == set(splits["train"][0].paths)
    assert len(held) == 50 * 2  # 15 train images per class after val's 5: 10% rounds to 2
    index = {path: i for i, path in enumerate(splits["train"][0].paths)}
    np.testing.assert_array_equal(held_images, splits["train"][1][[index[p] for p in held.paths]])
    np.testing.assert_array_equal(train_images, splits["train"][1][[index[p] for p in train.paths]])
    # New classes in val (Omniglot's unseen characters): val's loss chooses, and says so.
    omniglot = load_config(None, tiny_overrides(omniglot_subset, tmp_path))
    omniglot_splits = training_data.load_splits(omniglot)
    assert training_data.selection_split(omniglot, omniglot_splits)[2] == "val"
    nothing = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + ["train.validation_steps=0"])
    assert training_data.selection_split(nothing, omniglot_splits)[1:] == ((None, None), "none")


def test_csv_annotations_with_a_val_ratio_split_train_and_evaluate(omniglot_subset, tmp_path):
    train_root = os.path.join(omniglot_subset, "train")
    rows = [(f"{name}/{image}", name) for name in sorted(os.listdir(train_root))[:12]
            for image in sorted(os.listdir(os.path.join(train_root, name)))]
    csv_path = tmp_path / "labels.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "character"])
        writer.writerows(rows)
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        f"data.csv={csv_path}", f"data.root={train_root}", "data.dataset=null",
        "data.csv_path_column=file", "data.csv_label_column=character", "data.val_ratio=0.25",
        "train.epochs=1"])
    splits = training_data.load_splits(config)
    train, val = splits["train"][0], splits["val"][0]
    assert len(train) + len(val) == len(rows) and len(val) == 12 * 5  # 20 images x 0.25 per class
    assert set(val.class_names) == set(train.class_names)
    assert not set(train.paths) & set(val.paths)
    metrics = training.run(config)
    assert metrics["protocol"] != "leave_one_out" and 0.0 <= metrics["top1_accuracy"] <= 1.0
    # val shares the train classes: the checkpoint was chosen on a slice of train, not on val.
    assert metrics["checkpoint_selection"] == "train_holdout"
    # Without a CSV, the class folders of train/ are split the same way when val/ is missing.
    folders = load_config(None, tiny_overrides(os.path.dirname(train_root), tmp_path) + [
        "data.dataset=null", "data.val_split=missing", "data.val_ratio=0.25"])
    split = training_data.load_splits(folders)
    assert sorted(split) == ["missing", "train"] and len(split["missing"][0]) == 50 * 5
    with pytest.raises(ConfigError, match="encodings.splits must name splits of the data"):
        training.run(load_config(None, tiny_overrides(omniglot_subset, tmp_path, name="csv2") + [
            f"data.csv={csv_path}", f"data.root={train_root}", "data.dataset=null",
            "data.csv_path_column=file", "data.csv_label_column=character", "train.epochs=1",
            "train.steps_per_epoch=1", "encodings.splits=[train, test]"]))


def test_pretraining_and_augmentation_run_through_the_config(omniglot_subset, tmp_path):
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + [
        "train.pretrain_epochs=1", "data.augmentation=light",
        "data.transforms=[{name: GaussNoise, p: 0.5}]", "train.epochs=1"])
    metrics = training.run(config)
    assert 0.0 <= metrics["top1_accuracy"] <= 1.0
    with pytest.raises(ConfigError, match="data.transforms: .*GausNoise"):
        training.run(load_config(None, tiny_overrides(omniglot_subset, tmp_path, name="bad") + [
            "data.transforms=[{name: GausNoise}]"]))


def test_training_setup_of_each_architecture(omniglot_subset, tmp_path):
    import keras

    from embedding_net.training.generators.pairs import PairGenerator
    from embedding_net.training.generators.triplets import TripletGenerator
    from embedding_net.losses.contrastive import ContrastiveLoss
    from embedding_net.losses.proxies import ProxyAnchorLoss
    from embedding_net.losses.triplet import TripletMarginLoss
    from embedding_net.models.builders import build_embedding_model

    def setup(*overrides):
        config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + list(overrides))
        splits = training_data.load_splits(config)
        model = build_embedding_model("conv4", (28, 28, 1), 16)
        return model, training_setup.build_training_setup(config, model, splits["train"], splits["val"])

    model, pairs = setup("model.architecture=siamese", "loss.name=contrastive", "loss.margin=1.0",
                         "loss.mining=hard", "data.batch_size=6")
    assert isinstance(pairs.train_data, PairGenerator) and pairs.train_data.mining == "hard"
    assert pairs.train_data.embedding_model is model and pairs.train_data.batch_size == 6
    assert isinstance(pairs.loss, ContrastiveLoss) and pairs.loss.margin == 1.0
    assert isinstance(pairs.val_data, PairGenerator)
    model, l1 = setup("model.architecture=siamese", "model.siamese_head=l1", "loss.name=binary_crossentropy")
    assert isinstance(l1.loss, keras.losses.BinaryCrossentropy)
    assert l1.model.get_layer("same_class") is not None
    model, triplets = setup("model.architecture=triplet", "loss.mining=hard", "loss.margin=0.3")
    assert isinstance(triplets.train_data, TripletGenerator)
    assert triplets.train_data.mining == "hard" and triplets.train_data.margin == 0.3
    assert isinstance(triplets.loss, TripletMarginLoss) and triplets.loss.margin == 0.3
    assert triplets.train_data.batch_size == 16  # P x K of the tiny config
    model, arcface = setup("loss.name=arcface", "loss.margin=0.4", "loss.scale=20", "loss.distance=cosine")
    assert arcface.model.get_layer("arcface").num_classes == 50
    assert arcface.val_data is None  # Omniglot's val characters are new: they have no centre
    (images, labels), targets = next(iter(arcface.train_data))
    assert images.shape == (16, 28, 28, 1) and np.array_equal(labels, targets)
    model, cosface = setup("loss.name=cosface", "loss.sub_centers=2", "loss.distance=cosine")
    assert cosface.model.get_layer("cosface").sub_centers == 2 and cosface.metrics
    model, proxy_anchor = setup("loss.name=proxy_anchor", "loss.alpha=16", "loss.distance=cosine")
    assert isinstance(proxy_anchor.loss, ProxyAnchorLoss) and proxy_anchor.loss.alpha == 16.0
    assert proxy_anchor.model.get_layer("proxy_anchor").num_classes == 50
    images, labels = next(iter(proxy_anchor.train_data))  # images alone in: no margin needs the label
    assert images.shape == (16, 28, 28, 1) and proxy_anchor.model(images).shape == (16, 50)
    with pytest.raises(ConfigError, match="needs the images in memory: set data.cache: memory"):
        setup("model.architecture=triplet", "data.cache=none")
    model, memory = setup("loss.name=supcon", "loss.memory_size=64", "loss.memory_warmup_steps=10")
    assert memory.model.tower is model and memory.model.memory.size == 64 and memory.model.memory.warmup_steps == 10
    with pytest.raises(ConfigError, match=r"loss.memory_size must hold at least one batch \(16 = "):
        setup("loss.memory_size=8")


def test_batches_label_by_a_superset_of_class_names(omniglot_subset, tmp_path):
    # ArcFace's validation batches: val images labelled by the training classes' indices.
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path))
    folder, images = training_data.load_splits(config)["train"]
    some = folder.subset(np.isin(folder.labels, [1, 3, 4]))
    superset = ["zzz_unused", *folder.class_names]
    _, labels = next(iter(training_data.batches(config, some, images[np.isin(folder.labels, [1, 3, 4])], 0,
                                                classes_per_batch=3, class_names=superset)))
    named = {superset[label] for label in np.asarray(labels)}
    assert named == {folder.class_names[i] for i in (1, 3, 4)}


def test_multi_worker_without_tf_config_is_a_config_error(omniglot_subset, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + ["train.distribute=multi_worker"])
    with pytest.raises(ConfigError, match="train.distribute multi_worker: .*TF_CONFIG"):
        training.run(config)
