"""Training callbacks: atomic checkpoints and a learning-rate column in the logs."""

import json
import os

import keras
import numpy as np

from embedding_net.atomic import atomic_path


def export_model(model):
    """The same layers and weights as a fresh, uncompiled model: saved without optimizer state."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def save_model_atomically(model, path):
    """Saves `model` (without optimizer state) to a `.keras` file via a temporary file."""
    with atomic_path(path) as temporary:
        export_model(model).save(temporary)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimizer's current learning rate to the epoch logs as `learning_rate`.

    Place it before `CSVLogger` so the column reaches the history file.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the model each epoch to `last_path`, and to `best_path` when `monitor` improves.

    Unlike `keras.callbacks.ModelCheckpoint`, every write goes through a temporary file and a
    rename, so a crash never leaves a torn checkpoint. `saved_model` is the model written
    (default: the one being trained); a Siamese, triplet or ArcFace training model passes its
    embedding tower, the model that is kept.
    """

    def __init__(self, last_path, best_path, monitor="val_loss", saved_model=None):
        super().__init__()
        self.last_path = last_path
        self.best_path = best_path
        self.monitor = monitor
        self.saved_model = saved_model
        self.best = np.inf

    def on_epoch_end(self, epoch, logs=None):
        if not np.isfinite(float((logs or {}).get("loss", 0.0))):
            return  # never replace a good checkpoint with diverged weights
        saved = self.saved_model if self.saved_model is not None else self.model
        save_model_atomically(saved, self.last_path)
        value = (logs or {}).get(self.monitor)
        if value is not None and np.isfinite(value) and value < self.best:
            self.best = float(value)
            save_model_atomically(saved, self.best_path)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, and remembers where.

    Unlike `keras.callbacks.TerminateOnNaN` it records the step, so the caller can say where it
    happened; the checkpoints written at earlier epoch ends stay the last good ones.
    """

    def __init__(self):
        super().__init__()
        self.failed_step = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            self.failed_step = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


def completed_epochs(backup_dir):
    """Epochs finished by an interrupted run whose `BackupAndRestore` state is in `backup_dir`."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return int(json.load(handle)["epoch"])
