"""The one reader of the config: builds data, model, loss and optimizer, trains, then writes
the model, the encodings and the metrics into the run folder."""

import contextlib
import json
import os
import shutil
import time
import typing
import warnings

import keras
import numpy as np

from embedding_net.atomic import atomic_write_text
from embedding_net.backbones import get_backbone, list_backbones
from embedding_net.callbacks import (
    AtomicCheckpoint,
    LearningRateLogger,
    StopOnNonFiniteLoss,
    completed_epochs,
    save_model_atomically,
)
from embedding_net.config import load_config, save_config
from embedding_net.data import add_rotated_classes, drop_unusable, find_unreadable, read_images, scan_image_folder
from embedding_net.datasets import DATASETS
from embedding_net.distributed import (
    build_strategy,
    check_classes_per_replica,
    fit_distributed,
    is_chief,
    worker_dir,
)
from embedding_net.encodings import embed_folder_images, reference_encodings, save_encodings
from embedding_net.errors import ConfigError, DatasetError, ModelFileError, TrainingDivergedError
from embedding_net.export import export_litert
from embedding_net.scoring import score_folders
from embedding_net.reports import plot_gallery, plot_tsne_pair, tsne_subsample, write_class_tables
from embedding_net.visualization import plot_batch, plot_training_curves
from embedding_net.arcface import arcface_batches, build_arcface_model
from embedding_net.augmentations import BatchAugmenter, augment_dataset, build_augmentation
from embedding_net.generators import PairGenerator, TripletGenerator
from embedding_net.losses import BatchContrastiveLoss, ContrastiveLoss, TripletLoss, TripletMarginLoss
from embedding_net.pretraining import pretrain_classifier
from embedding_net.monitors import collapse_monitors
from embedding_net.models import build_embedding_model, build_siamese_model, build_triplet_model, load_embedding_model
from embedding_net.sampling import pk_dataset
from embedding_net.sources import scan_splits
from embedding_net.schedules import build_learning_rate, plateau_callbacks
from embedding_net.schedules import build_optimizer as build_optimizer_by_name


def prepare_dataset(data):
    """Materialises a built-in dataset on first use; returns the dataset root."""
    if data.dataset is not None:
        DATASETS[data.dataset](data.root)
    if not os.path.isdir(data.root):
        raise DatasetError(f"data.root folder not found: {data.root}")
    return data.root


def _cache_in_memory(data, image_shape, count):
    if data.cache != "auto":
        return data.cache == "memory"
    return count * int(np.prod(image_shape)) <= data.cache_max_gb * 2**30


def decode_split(config, folder, min_images_per_class=2):
    """`(ImageFolder, images)` of a scanned split: the images decoded at the model's input size
    when they fit the memory cache (`data.cache`), else None (decoded batch by batch); files
    that cannot be decoded are dropped with one warning."""
    height, width, channels = config.model.input_shape
    if _cache_in_memory(config.data, config.model.input_shape, len(folder)):
        images, failed = read_images(folder.paths, (height, width), channels,
                                     progress=config.train.verbose > 0)
        folder, keep = drop_unusable(folder, failed, min_images_per_class)
        return folder, images[keep]
    failed = find_unreadable(folder.paths, progress=config.train.verbose > 0)
    return drop_unusable(folder, failed, min_images_per_class)[0], None


def load_split(config, split, min_images_per_class=2):
    """Scans and decodes the class folders `data.root/<split>` (see `decode_split`)."""
    folder = scan_image_folder(os.path.join(config.data.root, split), min_images_per_class=1)
    return decode_split(config, folder, min_images_per_class)


def load_splits(config):
    """The train split and, when there is one, the val split: `{name: (ImageFolder, images)}`,
    from a CSV file or class folders (see `sources.scan_splits`), decoded by `decode_split`."""
    data = config.data
    scanned = scan_splits(data.root, data.train_split, data.val_split, csv_path=data.csv,
                          path_column=data.csv_path_column, label_column=data.csv_label_column,
                          split_column=data.csv_split_column, val_ratio=data.val_ratio, seed=config.train.seed)
    return {split: decode_split(config, folder, 2 if split == data.train_split else 1)
            for split, folder in scanned.items()}


def batches(config, folder, images, seed, classes_per_batch=None, start_batch=0):
    """The P x K `tf.data` pipeline over one split, in memory or decoded on the fly."""
    return pk_dataset(
        folder.labels, len(folder.class_names),
        classes_per_batch or config.data.classes_per_batch, config.data.images_per_class,
        images=images, paths=None if images is not None else folder.paths,
        image_size=config.model.input_shape[:2], channels=config.model.input_shape[2], seed=seed,
        start_batch=start_batch,
    )


def _check_resumable(config, work_dir):
    """An interrupted run resumes only under the config it started with."""
    saved, backup_dir = os.path.join(work_dir, "config.yml"), os.path.join(work_dir, "backup")
    if completed_epochs(backup_dir) and os.path.isfile(saved) and load_config(saved) != config:
        raise ConfigError(
            f"{config.run_dir} holds an interrupted run made with another config; run the same "
            f"command to resume it, or delete {backup_dir} (or change output.name) to start over")


def embed_split(config, model, folder, images):
    """Embeddings of a split, from memory or read from disk in bounded chunks."""
    return embed_folder_images(model, folder, images, config.encodings.batch_size)


def build_loss(loss):
    """The in-batch loss of `loss.name` for the plain embedding model (P x K batches)."""
    if loss.name == "contrastive":
        return BatchContrastiveLoss(loss.positive_margin, loss.negative_margin, loss.distance,
                                    cross_replica=loss.cross_replica)
    return TripletLoss(loss.margin, loss.mining, loss.distance, loss.soft_margin, cross_replica=loss.cross_replica)


def build_augmentation_from(data, seed):
    """The albumentations pipeline of `data.augmentation` and `data.transforms` (None: none)."""
    try:
        return build_augmentation(data.augmentation, list(data.transforms), seed)
    except ValueError as error:
        raise ConfigError(f"data.transforms: {error}") from None


class TrainingSetup(typing.NamedTuple):
    """What `model.architecture` trains: the model fitted (sharing the embedding tower), its
    loss and metrics, and the training and validation data (tf.data or a mining generator)."""

    model: object
    loss: object
    metrics: list
    train_data: object
    val_data: object


def _remapped_labels(folder, class_names):
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[folder.class_names[label]] for label in folder.labels], np.int32)


def build_training_setup(config, model, training_set, validation_set, start_batch=0):
    """The training model, loss, metrics and data of `model.architecture` and `loss.name`.

    Augmentation applies to the training data only. `start_batch` restarts the tf.data
    pipelines at the batch an interrupted run reached; generators are told the epoch instead.
    """
    data, loss, seed = config.data, config.loss, config.train.seed
    (train_folder, train_images), (val_folder, val_images) = training_set, validation_set
    augmentation = build_augmentation_from(data, seed)
    architecture = config.model.architecture
    if architecture == "embedding":
        train_data = augment_dataset(batches(config, train_folder, train_images, seed, start_batch=start_batch),
                                     augmentation, seed, start_batch)
        val_data = None
        if val_folder is not None and len(val_folder.class_names) >= 2:
            val_data = batches(config, val_folder, val_images, seed + 1,
                               min(data.classes_per_batch, len(val_folder.class_names)))
        if loss.name != "arcface":
            return TrainingSetup(model, build_loss(loss), collapse_monitors(loss.margin, loss.distance),
                                 train_data, val_data)
        names = train_folder.class_names
        if val_data is not None and set(val_folder.class_names) <= set(names):
            # Validation loss needs the val images labelled with the training classes' centres.
            val_data = pk_dataset(
                _remapped_labels(val_folder, names), len(names),
                min(data.classes_per_batch, len(val_folder.class_names)), data.images_per_class,
                images=val_images, paths=None if val_images is not None else val_folder.paths,
                image_size=config.model.input_shape[:2], channels=config.model.input_shape[2], seed=seed + 1)
            val_data = arcface_batches(val_data)
        else:
            val_data = None  # new classes (e.g. Omniglot's evaluation characters) have no centre
        arcface = build_arcface_model(model, len(names), loss.scale, loss.margin)
        return TrainingSetup(arcface, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                             [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                             arcface_batches(train_data), val_data)

    if train_images is None:
        raise ConfigError(f"model.architecture {architecture} mines with the live model and needs the "
                          "images in memory: set data.cache: memory")
    batch_size = data.batch_size or data.classes_per_batch * data.images_per_class
    augment = None if augmentation is None else BatchAugmenter(augmentation, seed)

    def generator(folder, images, generator_seed, augment=None):
        eligible = int((folder.class_counts() >= 2).sum())
        common = dict(batch_size=batch_size, steps_per_epoch=config.train.steps_per_epoch,
                      k_classes=min(data.classes_per_batch, eligible), k_samples=data.images_per_class,
                      distance=loss.distance, seed=generator_seed, augment=augment)
        if architecture == "siamese":
            return PairGenerator.from_folder(folder, images, mining=loss.pair_mining, embedding_model=model, **common)
        return TripletGenerator.from_folder(folder, images, embedding_model=model, margin=loss.margin,
                                            negatives_selection_mode=loss.negatives_selection_mode, **common)

    train_data = generator(train_folder, train_images, seed, augment)
    val_data = None
    if val_folder is not None and val_images is not None and (val_folder.class_counts() >= 2).sum() >= 2:
        val_data = generator(val_folder, val_images, seed + 1)
    if architecture == "siamese":
        siamese = build_siamese_model(model, config.model.siamese_head)
        if config.model.siamese_head == "l1":
            return TrainingSetup(siamese, keras.losses.BinaryCrossentropy(),
                                 [keras.metrics.BinaryAccuracy(name="accuracy")], train_data, val_data)
        return TrainingSetup(siamese, ContrastiveLoss(loss.margin), [], train_data, val_data)
    return TrainingSetup(build_triplet_model(model), TripletMarginLoss(loss.margin, loss.distance), [],
                         train_data, val_data)


def build_optimizer(train):
    """The optimizer of `train.optimizer`, with the `train.lr_schedule` learning rate."""
    learning_rate = build_learning_rate(
        train.learning_rate, train.lr_schedule, total_steps=train.epochs * train.steps_per_epoch,
        warmup_steps=train.warmup_epochs * train.steps_per_epoch,
        step_size=train.step_size * train.steps_per_epoch, decay_factor=train.decay_factor)
    return build_optimizer_by_name(train.optimizer, learning_rate, train.momentum, train.nesterov,
                                   train.weight_decay)


def schedule_callbacks(train, monitor):
    """Reduce-on-plateau and early stopping (restoring the best weights), when configured."""
    return plateau_callbacks(monitor, train.plateau_patience if train.lr_schedule == "plateau" else None,
                             train.decay_factor, train.early_stopping_patience)


def _check_batch(config, folder, split):
    if len(folder.class_names) < 2:
        raise DatasetError(f"{folder.root}: fewer than 2 usable classes; nothing to learn from")
    if config.data.classes_per_batch > len(folder.class_names):
        raise ConfigError(
            f"data.classes_per_batch must be at most the {len(folder.class_names)} usable classes "
            f"of the {split} split, received: {config.data.classes_per_batch}"
        )


def _check_model_keys(model):
    names = list_backbones()
    if model.backbone not in names:
        raise ConfigError(f"model.backbone must be one of {', '.join(names)}, received: {model.backbone!r}")
    spec = get_backbone(model.backbone)
    is_file = model.weights is not None and model.weights.endswith((".keras", ".weights.h5"))
    if model.weights is not None and model.weights not in spec.pretrained and not is_file:
        offered = ", ".join(["null", *spec.pretrained, "a .keras or .weights.h5 file"])
        raise ConfigError(f"model.weights of backbone {model.backbone} must be one of {offered}, "
                          f"received: {model.weights!r}")
    if is_file and not os.path.isfile(model.weights):
        raise ConfigError(f"model.weights file not found: {model.weights}")
    if min(model.input_shape[:2]) < spec.min_input_size:
        raise ConfigError(f"model.input_shape of backbone {model.backbone} must be at least "
                          f"{spec.min_input_size} pixels high and wide, received: {list(model.input_shape)}")


# Keras dtype policies of `train.mixed_precision`: layers compute in half precision and keep
# float32 weights; distances, mining, losses and the L2 normalisation cast to float32 anyway.
DTYPE_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def run(config):
    """Trains as `config` says and writes every output into `config.run_dir`.

    Returns:
        The metrics dict also written to `metrics.json` (empty on a worker other than the chief
        of a multi-worker run, which writes nothing that lasts).
    """
    try:
        # First: a multi-worker strategy must exist before any other TensorFlow operation.
        strategy = build_strategy(config.train.distribute)
    except (ValueError, RuntimeError) as error:
        raise ConfigError(f"train.distribute {config.train.distribute}: {error}") from None
    # With mixed_float16, compile() wraps the optimizer in a LossScaleOptimizer by itself.
    with _dtype_policy(DTYPE_POLICIES[config.train.mixed_precision]):
        return _run(config, strategy)


@contextlib.contextmanager
def _dtype_policy(name):
    """Keras' global dtype policy set to `name` inside the block, restored after it."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _check_distribution(config, strategy):
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        try:
            check_classes_per_replica(config.data.classes_per_batch, replicas)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if config.train.distribute == "multi_worker" and (
            config.model.architecture != "embedding" or config.train.pretrain_epochs):
        # Both train with model.fit, which fails under MultiWorkerMirroredStrategy in Keras 3.
        raise ConfigError("train.distribute multi_worker trains model.architecture embedding without "
                          f"train.pretrain_epochs, received: {config.model.architecture!r} and "
                          f"{config.train.pretrain_epochs}")


def _build_model(config, pretrained=True):
    """The embedding model of `config`; `pretrained=False` skips `model.weights`, for a copy
    whose weights are set from a trained model at once."""
    return build_embedding_model(
        config.model.backbone, config.model.input_shape, config.model.embedding_size,
        config.model.weights if pretrained else None, config.model.pooling, config.model.invert,
        None if config.model.freeze == "none" else config.model.freeze,
    )


def _run(config, strategy):
    _check_model_keys(config.model)
    _check_distribution(config, strategy)
    keras.utils.set_random_seed(config.train.seed)
    run_dir = config.run_dir
    # Workers other than the chief of a multi-worker run write into a folder of their own,
    # deleted when training ends; with one device or one machine, work_dir is run_dir.
    work_dir = worker_dir(run_dir, strategy)
    chief = is_chief(strategy)
    os.makedirs(os.path.join(work_dir, "checkpoints"), exist_ok=True)
    backup_dir = os.path.join(work_dir, "backup")
    _check_resumable(config, work_dir)
    resumed = completed_epochs(backup_dir)
    save_config(config, os.path.join(work_dir, "config.yml"))
    prepare_dataset(config.data)

    splits = load_splits(config)
    train_folder, train_images = splits[config.data.train_split]
    _check_batch(config, train_folder, config.data.train_split)
    val_folder, val_images = splits.get(config.data.val_split, (None, None))

    with strategy.scope():
        model = _build_model(config)
    training_set = (train_folder, train_images)
    if config.data.rotate_classes:
        if train_images is None:
            raise ConfigError("data.rotate_classes needs the images in memory: set data.cache: memory")
        training_set = add_rotated_classes(train_folder, train_images)
    start_batch = resumed * config.train.steps_per_epoch
    # Batch i of the run is the same whether or not it was interrupted before it.
    with strategy.scope():
        setup = build_training_setup(config, model, training_set, (val_folder, val_images), start_batch)
        setup.model.compile(optimizer=build_optimizer(config.train), loss=setup.loss, metrics=setup.metrics)
        # Left to fit, the optimizer creates its variables inside the first traced step, and
        # TensorFlow then traces the whole step a second time; built now, it is traced once.
        setup.model.optimizer.build(setup.model.trainable_variables)
    if isinstance(setup.train_data, PairGenerator | TripletGenerator):
        setup.train_data.epoch = resumed  # mining draws depend on the epoch
    validation = setup.val_data if config.train.validation_steps else None
    monitor = "val_loss" if validation is not None else "loss"
    best_path = os.path.join(work_dir, "checkpoints", "best.keras")
    divergence = StopOnNonFiniteLoss()
    callbacks = [
        divergence,
        LearningRateLogger(),
        AtomicCheckpoint(os.path.join(work_dir, "checkpoints", "last.keras"), best_path, monitor, saved_model=model),
        keras.callbacks.CSVLogger(os.path.join(work_dir, "history.csv"), append=resumed > 0),
        *schedule_callbacks(config.train, monitor),
        # Last, so that an epoch counts as done only once everything above has been written.
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
    ]
    view_folder, view_images = (val_folder, val_images) if val_folder is not None else (train_folder, train_images)
    tsne_indices = tsne_subsample(view_folder.labels, config.evaluation.tsne_max_points,
                                  config.evaluation.tsne_max_classes, config.train.seed)
    plot_seconds = tsne_seconds = 0.0
    if config.evaluation.plots and chief:
        started = time.time()
        before = embed_split(config, _local_copy(config, model), view_folder.subset(np.isin(np.arange(len(view_folder)), tsne_indices)),
                             None if view_images is None else view_images[tsne_indices])
        tsne_seconds += plot_tsne_pair(os.path.join(run_dir, "plots", "tsne_before"), before, view_folder,
                                       tsne_indices, "before training", config.train.seed)
        plot_seconds += time.time() - started
    started = time.time()
    if config.train.pretrain_epochs and not resumed:  # a resumed run restores pre-trained weights
        pretrain_classifier(
            model, augment_dataset(batches(config, *training_set, config.train.seed + 2),
                                   build_augmentation_from(config.data, config.train.seed), config.train.seed),
            len(training_set[0].class_names), config.train.pretrain_epochs, config.train.steps_per_epoch,
            config.train.learning_rate, verbose=config.train.verbose)
    schedule = dict(epochs=config.train.epochs, steps_per_epoch=config.train.steps_per_epoch,
                    validation_data=validation, callbacks=callbacks, verbose=config.train.verbose,
                    validation_steps=config.train.validation_steps if validation else None)
    if config.train.distribute == "multi_worker":  # Keras' fit fails there (keras#20585)
        fit_distributed(setup.model, setup.train_data, strategy=strategy, **schedule)
    else:  # batches are drawn at random already; shuffling would reorder a generator's batches
        setup.model.fit(setup.train_data, shuffle=False, **schedule)
    train_seconds = time.time() - started
    if divergence.failed_step is not None:
        epoch, batch = divergence.failed_step
        kept = "; the last good model is in checkpoints/last.keras" if epoch > 1 else ""
        raise TrainingDivergedError(
            f"the loss became NaN or infinite at epoch {epoch}, step {batch}: train.learning_rate "
            f"({config.train.learning_rate}) is likely too high for this model and batch{kept}")
    if config.train.restore_best and os.path.isfile(best_path):
        model.set_weights(load_embedding_model(best_path).get_weights())
    save_model_atomically(model, os.path.join(work_dir, "model.keras"))
    if not chief:
        shutil.rmtree(work_dir, ignore_errors=True)
        return {}
    # Embedding and evaluation on the chief alone, with a model outside the strategy.
    model = _local_copy(config, model)
    if config.train.export_litert:
        export_seconds = write_litert_copy(_float32_copy(config, model), os.path.join(work_dir, "model.keras"))

    embedded = {name: embed_split(config, model, folder, images)
                for name, (folder, images) in splits.items()}
    metrics, classes = evaluate(config, splits, embedded)
    if config.evaluation.plots:
        started = time.time()
        tsne_seconds += plot_tsne_pair(os.path.join(run_dir, "plots", "tsne_after"),
                                       embedded[view_folder_split(config, splits)][tsne_indices],
                                       view_folder, tsne_indices, "after training", config.train.seed)
        plot_training_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "plots", "curves.png"))
        shown = view_folder_split(config, splits)
        plot_gallery(splits[shown][0], embedded[shown], os.path.join(run_dir, "plots", "neighbours.png"),
                     config.loss.distance, config.train.seed)
        batch_images, batch_labels = next(iter(batches(config, *training_set, config.train.seed)))
        plot_batch(np.asarray(batch_images), np.asarray(batch_labels), os.path.join(run_dir, "plots", "batch.png"),
                   class_names=training_set[0].class_names, columns=config.data.images_per_class)
        plot_seconds += time.time() - started
        metrics["plot_seconds"] = round(plot_seconds, 1)
        metrics["tsne_seconds"] = round(tsne_seconds, 1)
    write_encodings(config, model, splits, embedded, metrics.get("threshold"))
    metrics["train_seconds"] = round(train_seconds, 1)
    if config.train.export_litert:
        metrics["litert_export_seconds"] = export_seconds
    if classes is not None:
        write_class_tables(run_dir, *classes)
    atomic_write_text(os.path.join(run_dir, "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    return metrics


def write_litert_copy(model, keras_path):
    """Writes model.tflite for test.py's fast start; a model LiteRT cannot convert only warns
    (test.py then loads model.keras). Returns the seconds it took."""
    started = time.time()
    try:
        export_litert(model, keras_path)
    except ModelFileError as error:
        warnings.warn(f"{error}; test.py will load the .keras model with TensorFlow", stacklevel=2)
    return round(time.time() - started, 1)


def write_encodings(config, model, splits, embedded, threshold=None):
    """Saves the reference encodings: the splits of `encodings.splits`, capped per class, with
    the verification `threshold` beyond which `test.py` answers "unknown"."""
    for split in config.encodings.splits:
        if split not in splits:
            if config.data.csv is not None or not os.path.isdir(os.path.join(config.data.root, split)):
                raise ConfigError(f"encodings.splits must name splits of the data ({', '.join(splits)}), "
                                  f"received: {split!r}")
            folder, images = load_split(config, split, min_images_per_class=1)
            splits[split] = (folder, images)
            embedded[split] = embed_split(config, model, folder, images)
    metadata = {"distance": config.loss.distance, "input_shape": list(config.model.input_shape),
                "backbone": config.model.backbone, "splits": list(config.encodings.splits)}
    if threshold is not None:
        metadata["threshold"] = float(threshold)
    encodings = reference_encodings([(splits[split][0], embedded[split]) for split in config.encodings.splits],
                                    config.encodings.max_per_class, metadata)
    save_encodings(os.path.join(config.run_dir, "encodings.npz"), encodings)


def evaluate(config, splits, embedded):
    """Every metric of the val split (see `scoring.score_split`), plus the official one-shot
    task when the dataset has one. Val images are queries against the train images when every
    val class appears in train, else leave-one-out within val (new classes, as in Omniglot).

    Returns:
        `(metrics, (labels, predicted, class_names))`, the val labels and top-1 predictions in
        the class ids of `class_names`.
    """
    val_split, train_split = config.data.val_split, config.data.train_split
    if val_split not in splits:
        warnings.warn(f"no {val_split} split under {config.data.root}: nothing to evaluate", stacklevel=2)
        return {}, None
    (val_folder, _), (train_folder, _) = splits[val_split], splits[train_split]
    return score_folders(val_folder, embedded[val_split], train_folder, embedded[train_split],
                         config.loss.distance, config.evaluation.knn_k, config.evaluation.episodes,
                         config.train.seed, dataset_root=config.data.root)


def _float32_copy(config, model):
    """`model` computing in float32: LiteRT's built-in ops have no half-precision division."""
    if config.train.mixed_precision == "none":
        return model
    with _dtype_policy("float32"):
        twin = _build_model(config, pretrained=False)
    twin.set_weights(model.get_weights())
    return twin


def _local_copy(config, model):
    """`model`, or an identical model outside the strategy when there is one, so the chief
    can embed images on its own without waiting on the other workers."""
    if config.train.distribute == "none":
        return model
    local = _build_model(config, pretrained=False)
    local.set_weights(model.get_weights())
    return local


def view_folder_split(config, splits):
    """The split shown in pictures: val when there is one, else train."""
    return config.data.val_split if config.data.val_split in splits else config.data.train_split
