"""The one reader of the config: builds data, model, loss and optimizer, trains, then writes
the model, the encodings and the metrics into the run folder.

This file runs the phases of a run (checks, data, model, fit); `data` loads the splits and
batches, `setup` builds what is fitted, `finish` runs the phases after training and `outputs`
writes what a run leaves behind."""

import contextlib
import dataclasses
import os
import shutil
import time
import warnings

import keras
import numpy as np

from embedding_net.data.augmentation import augment_dataset
from embedding_net.models.backbones import get_backbone
from embedding_net.models.hub import ARCHITECTURES as HUB_BACKBONES
from embedding_net.training.callbacks import (
    AtomicCheckpoint,
    LearningRateLogger,
    StopOnNonFiniteLoss,
    completed_epochs,
    restore_readable_backup,
    save_model_atomically,
)
from embedding_net.config.checks import check_model_paths, same_run
from embedding_net.config.loading import config_to_dict, load_config, save_config
from embedding_net.data.folders import add_rotated_classes
from embedding_net.training.strategy import build_strategy, check_classes_per_replica, is_chief, worker_dir
from embedding_net.training.distributed import fit_distributed
from embedding_net.errors import ConfigError, TrainingDivergedError
from embedding_net.training.generators.pairs import PairGenerator
from embedding_net.training.generators.triplets import TripletGenerator
from embedding_net.models.builders import build_embedding_model, load_embedding_model
from embedding_net.training.precision import cpu_bfloat16_flags, device_line, gpu_names, resolve_mixed_precision
from embedding_net.training.pretraining import pretrain_classifier
from embedding_net.viz.reports import plot_tsne_pair, tsne_subsample
from embedding_net.training.data import (
    batches,
    build_augmentation_from,
    check_batch,
    decode_later,
    decode_splits,
    embed_split,
    fitting_reads_val,
    prepare_dataset,
    scan_data,
    selection_split,
)
from embedding_net.training.finish import finish_run
from embedding_net.training.outputs import view_folder_split
from embedding_net.training.setup import build_training_setup, run_optimizer, schedule_callbacks
from embedding_net.training.tensorboard import tensorboard_callbacks

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
    gpus = gpu_names()
    precision, reason = resolve_mixed_precision(config.train.mixed_precision, gpus, cpu_bfloat16_flags())
    # The run's config.yml records the precision it trained in, not `auto`.
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, mixed_precision=precision))
    if config.train.verbose and is_chief(strategy):
        print(device_line(precision, reason, gpus, strategy.num_replicas_in_sync), flush=True)
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
    _check_model_keys(config.model, config.train)
    _check_distribution(config, strategy)
    keras.utils.set_random_seed(config.train.seed)
    # Workers other than the chief of a multi-worker run write into a folder of their own,
    # deleted when training ends; with one device or one machine, work_dir is run_dir.
    work_dir = worker_dir(config.run_dir, strategy)
    chief = is_chief(strategy)
    os.makedirs(os.path.join(work_dir, "checkpoints"), exist_ok=True)
    _check_resumable(config, work_dir)
    note = restore_readable_backup(os.path.join(work_dir, "backup"), os.path.join(work_dir, "history.csv"))
    if note:
        warnings.warn(note, stacklevel=2)
    resumed = completed_epochs(os.path.join(work_dir, "backup"))
    if resumed and chief:  # even when quiet: the run is not what a fresh one would be
        print(f"resuming at epoch {resumed + 1} of {config.train.epochs}", flush=True)
    save_config(config, os.path.join(work_dir, "config.yml"))

    splits, training_set, (validation_set, selection), later = _load_data(config)
    with strategy.scope():
        model = _build_model(config)
        setup = _compiled_setup(config, model, training_set, validation_set, resumed)
    view_folder = splits[view_folder_split(config, splits)][0]
    tsne_indices = tsne_subsample(view_folder.labels, config.evaluation.tsne_max_points,
                                  config.evaluation.tsne_max_classes, config.train.seed)
    plot_seconds = tsne_seconds = 0.0
    if config.evaluation.plots and chief:
        plot_seconds, tsne_seconds = _plot_before_training(config, model, splits, tsne_indices)

    started = time.time()
    _fit(config, strategy, model, setup, training_set, work_dir, resumed)
    train_seconds = time.time() - started
    save_model_atomically(model, os.path.join(work_dir, "model.keras"))
    if not chief:
        shutil.rmtree(work_dir, ignore_errors=True)
        return {}

    splits, tsne_indices = decode_later(config, splits, later, view_folder_split(config, splits), tsne_indices)
    # Embedding and evaluation on the chief alone, with a model outside the strategy.
    model = _local_copy(config, model)
    return finish_run(config, model, _float32_copy(config, model), splits, training_set, tsne_indices,
                      {"train_seconds": train_seconds, "plot_seconds": plot_seconds, "tsne_seconds": tsne_seconds,
                       "selection": setup.selection(selection, config.train.validation_steps)})


def _load_data(config):
    """The splits, the training set (with its rotated classes when asked for), `(validation
    set, what it is)` from `selection_split`, and the splits left undecoded until training ends
    (val, `(folder, None)`, unless training reads it: `fitting_reads_val`)."""
    prepare_dataset(config.data)
    scanned = scan_data(config)
    later = [] if fitting_reads_val(config, scanned) else [n for n in scanned if n == config.data.val_split]
    splits = decode_splits(config, {name: folder for name, folder in scanned.items() if name not in later})
    splits.update({name: (scanned[name], None) for name in later})
    check_batch(config, splits[config.data.train_split][0], config.data.train_split)
    training_set, selection_set, selection = selection_split(config, splits)
    train_folder, train_images = training_set
    check_batch(config, train_folder, config.data.train_split)
    if config.data.rotate_classes:
        if train_images is None:
            raise ConfigError("data.rotate_classes needs the images in memory: set data.cache: memory")
        training_set = add_rotated_classes(train_folder, train_images)
    return splits, training_set, (selection_set, selection), later


def _compiled_setup(config, model, training_set, validation_set, resumed):
    """`build_training_setup`, compiled, its optimizer built, resuming at epoch `resumed`."""
    # Batch i of the run is the same whether or not it was interrupted before it.
    start_batch = resumed * config.train.steps_per_epoch
    setup = build_training_setup(config, model, training_set, validation_set, start_batch)
    setup.model.compile(optimizer=run_optimizer(config, model, setup.model), loss=setup.loss, metrics=setup.metrics)
    # Left to fit, the optimizer creates its variables inside the first traced step, and
    # TensorFlow then traces the whole step a second time; built now, it is traced once.
    setup.model.optimizer.build(setup.model.trainable_variables)
    if isinstance(setup.train_data, PairGenerator | TripletGenerator):
        setup.train_data.epoch = resumed  # mining draws depend on the epoch
    return setup


def _plot_before_training(config, model, splits, tsne_indices):
    """The t-SNE of the untrained embeddings; returns `(seconds, t-SNE's part of them)`."""
    started = time.time()
    folder, images = splits[view_folder_split(config, splits)]
    shown = folder.subset(np.isin(np.arange(len(folder)), tsne_indices))
    before = embed_split(config, _local_copy(config, model), shown, None if images is None else images[tsne_indices])
    tsne_seconds = plot_tsne_pair(os.path.join(config.run_dir, "plots", "tsne_before"), before, folder,
                                  tsne_indices, "before training", config.train.seed)
    return time.time() - started, tsne_seconds


def _fit(config, strategy, model, setup, training_set, work_dir, resumed):
    """Pre-training when asked for, then the epochs of `train`, checkpointed and resumable;
    ends with the best weights when `train.restore_best` says so."""
    train = config.train
    validation = setup.val_data if train.validation_steps else None
    monitor = "val_loss" if validation is not None else "loss"
    best_path = os.path.join(work_dir, "checkpoints", "best.keras")
    divergence = StopOnNonFiniteLoss()
    callbacks = [
        divergence,
        LearningRateLogger(),
        AtomicCheckpoint(os.path.join(work_dir, "checkpoints", "last.keras"), best_path, monitor, saved_model=model),
        keras.callbacks.CSVLogger(os.path.join(work_dir, "history.csv"), append=resumed > 0),
        # Per-epoch scalars, chief only; before schedule_callbacks, which change the rate.
        *tensorboard_callbacks(config, is_chief(strategy), resumed),
        *schedule_callbacks(train, monitor),
        # Last, so that an epoch counts as done only once everything above has been written.
        keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup"), double_checkpoint=True),
    ]
    if train.pretrain_epochs and not resumed:  # a resumed run restores pre-trained weights
        pretrain_classifier(
            model, augment_dataset(batches(config, *training_set, train.seed + 2),
                                   build_augmentation_from(config.data, train.seed), train.seed),
            len(training_set[0].class_names), train.pretrain_epochs, train.steps_per_epoch,
            train.learning_rate, verbose=train.verbose)
    schedule = dict(epochs=train.epochs, steps_per_epoch=train.steps_per_epoch,
                    validation_data=validation, callbacks=callbacks, verbose=train.verbose,
                    validation_steps=train.validation_steps if validation else None)
    if train.distribute == "multi_worker":  # Keras' fit fails there (keras#20585)
        fit_distributed(setup.model, setup.train_data, strategy=strategy, **schedule)
    else:  # batches are drawn at random already; shuffling would reorder a generator's batches
        setup.model.fit(setup.train_data, shuffle=False, **schedule)
    if divergence.failed_step is not None:
        epoch, batch = divergence.failed_step
        kept = "; the last good model is in checkpoints/last.keras" if epoch > 1 else ""
        raise TrainingDivergedError(
            f"the loss became NaN or infinite at epoch {epoch}, step {batch}: train.learning_rate "
            f"({train.learning_rate}) is likely too high for this model and batch{kept}")
    if train.restore_best and os.path.isfile(best_path):
        model.set_weights(load_embedding_model(best_path).get_weights())


def _check_resumable(config, work_dir):
    """An interrupted run resumes only under the config it started with."""
    saved, backup_dir = os.path.join(work_dir, "config.yml"), os.path.join(work_dir, "backup")
    if (completed_epochs(backup_dir) and os.path.isfile(saved)
            and not same_run(config_to_dict(load_config(saved)), config_to_dict(config))):
        raise ConfigError(
            f"{config.run_dir} holds an interrupted run made with another config; run the same "
            f"command to resume it, or delete {backup_dir} (or change output.name) to start over")


def _check_model_keys(model, train):
    spec = get_backbone(model.backbone)
    if train.layer_decay != 1.0 and model.backbone not in HUB_BACKBONES:
        raise ConfigError(f"train.layer_decay applies to the transformer backbones ({', '.join(sorted(HUB_BACKBONES))}), "
                          f"not to {model.backbone}: leave it at 1.0, received: {train.layer_decay}")
    is_file = model.weights is not None and model.weights.endswith((".keras", ".weights.h5"))
    if model.weights is not None and model.weights not in spec.pretrained and not is_file:
        offered = ", ".join(["null", *spec.pretrained, "a .keras or .weights.h5 file"])
        raise ConfigError(f"model.weights of backbone {model.backbone} must be one of {offered}, "
                          f"received: {model.weights!r}")
    check_model_paths(model)
    if min(model.input_shape[:2]) < spec.min_input_size:
        raise ConfigError(f"model.input_shape of backbone {model.backbone} must be at least "
                          f"{spec.min_input_size} pixels high and wide, received: {list(model.input_shape)}")


def _rebuilt(config, model):
    """A new model of `config` holding `model`'s weights, built under the dtype policy and
    distribution strategy in force where it is called."""
    twin = _build_model(config, pretrained=False)
    twin.set_weights(model.get_weights())
    return twin


def _float32_copy(config, model):
    """`model` computing in float32, for the LiteRT and serving copies: LiteRT's built-in ops
    have no half-precision division, and a float16 graph in onnxruntime is 2e-4 off Keras's."""
    if config.train.mixed_precision == "none":
        return model
    with _dtype_policy("float32"):
        return _rebuilt(config, model)


def _local_copy(config, model):
    """`model`, or an identical model outside the strategy when there is one, so the chief
    can embed images on its own without waiting on the other workers."""
    return model if config.train.distribute == "none" else _rebuilt(config, model)
