"""Training callbacks: atomic checkpoints and a learning-rate column in the logs, and the check
that an interrupted run's backup can be read before it is resumed."""

import csv
import json
import os
import shutil

import h5py
import keras
import numpy as np

from embedding_net.atomic import atomic_path, atomic_write_csv


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


def _backup_epochs(weights, metadata):
    """The epochs a `BackupAndRestore` state records; raises if either file cannot be read."""
    with open(metadata, encoding="utf-8") as handle:
        epoch = json.load(handle)["epoch"]
    if not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"no epoch count in {os.path.basename(metadata)}")

    def read(name, item):  # returns None, or visititems would stop at the first dataset
        if isinstance(item, h5py.Dataset):
            item[()]

    with h5py.File(weights, "r") as store:  # HDF5 checks its header and length; reading checks the rest
        store.visititems(read)
    return epoch


def restore_readable_backup(backup_dir, history_path):
    """Makes the backup of an interrupted run loadable before it is resumed; returns a line
    saying what was done, or None when the backup is readable or absent.

    `BackupAndRestore(double_checkpoint=True)` keeps the state of the last two epochs. When the
    last cannot be read (a disk error, a torn copy), Keras falls back to the previous one by
    itself, but only for an `OSError` and without saying so, and the run would then count the
    epochs of the unreadable state. Here: the previous state is put in its place and the history
    cut to its epochs; with neither readable, the backup is removed and the run starts over.
    """
    if not os.path.isdir(backup_dir) or not os.listdir(backup_dir):
        return None
    weights, metadata = (os.path.join(backup_dir, name) for name in ("latest.weights.h5", "training_metadata.json"))
    try:
        # CSVLogger writes an epoch's row before the backup records the epoch: a kill between
        # the two would leave that row to be written again by the resumed run.
        _trim_history(history_path, _backup_epochs(weights, metadata))
        return None
    except Exception as error:  # h5py and json raise many types for a bad file; all mean the same
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    try:
        epochs = _backup_epochs(weights + ".bkp", metadata + ".bkp")
    except Exception:
        shutil.rmtree(backup_dir, ignore_errors=True)
        return f"the backup of the interrupted run in {backup_dir} cannot be read ({reason}); starting over"
    for name in (weights, metadata):  # each whole: a kill between them leaves Keras a readable pair
        with atomic_path(name) as temporary:
            shutil.copyfile(name + ".bkp", temporary)
    _trim_history(history_path, epochs)
    return (f"the last backup of the interrupted run in {backup_dir} cannot be read ({reason}); "
            f"resuming from the one before it, at epoch {epochs + 1}")


def _trim_history(history_path, epochs):
    """Keeps the header and the first `epochs` rows of history.csv (one row per epoch)."""
    rows = []
    if os.path.isfile(history_path):
        with open(history_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    if len(rows) > epochs + 1:
        atomic_write_csv(history_path, rows[0], rows[1:epochs + 1])


def completed_epochs(backup_dir):
    """Epochs finished by an interrupted run whose `BackupAndRestore` state is in `backup_dir`
    (those of the previous state when the last one's count cannot be read; 0 when neither can)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    for candidate in (path, path + ".bkp"):
        try:
            with open(candidate, encoding="utf-8") as handle:
                return int(json.load(handle)["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return 0
