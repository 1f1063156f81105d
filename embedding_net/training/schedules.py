"""Optimizers by name and learning-rate schedules, from plain arguments.

`embedding_net.training.run` maps the `train` section of a config onto these; a notebook calls them
directly: `build_optimizer("sgd", 0.1, schedule="step", total_steps=1000, step_size=200)`.
"""

import keras

from embedding_net.training.radam import RAdam

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "radam")
SCHEDULES = ("constant", "cosine", "step", "plateau")


def build_learning_rate(learning_rate, schedule="constant", total_steps=1, warmup_steps=0,
                        step_size=1, decay_factor=0.5):
    """A learning rate or a `keras.optimizers.schedules` object.

    Args:
        learning_rate: the peak (cosine) or initial (step) learning rate.
        schedule: `constant`; `cosine` (decay to 1% over `total_steps`, after a linear warm-up
            from 0 over `warmup_steps`); `step` (times `decay_factor` every `step_size` steps);
            `plateau` (constant here, lowered by `plateau_callbacks`).
        total_steps: the optimizer steps of the whole run.
        warmup_steps: linear warm-up steps of the cosine schedule (capped at total_steps - 1).
        step_size: steps between two decays of the step schedule.
        decay_factor: the factor of each step decay.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {', '.join(SCHEDULES)}. Received: {schedule!r}")
    if schedule == "cosine":
        warmup = max(min(warmup_steps, total_steps - 1), 0)
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else learning_rate,
            decay_steps=max(total_steps - warmup, 1), alpha=0.01,
            warmup_target=learning_rate if warmup else None, warmup_steps=warmup,
        )
    if schedule == "step":
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=step_size, decay_rate=decay_factor, staircase=True)
    return learning_rate


def build_optimizer(name, learning_rate, momentum=0.9, nesterov=False, weight_decay=0.004):
    """The optimizer `name` (one of `OPTIMIZERS`) with `learning_rate` (a float or a schedule).

    `momentum` and `nesterov` apply to `sgd`, `weight_decay` (decoupled) to `adamw`.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"`name` must be one of {', '.join(OPTIMIZERS)}. Received: {name!r}")
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    optimizers = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "radam": RAdam}
    return optimizers[name](learning_rate=learning_rate)


def plateau_callbacks(monitor, plateau_patience=None, decay_factor=0.5, early_stopping_patience=None):
    """Reduce-on-plateau (when `plateau_patience` is set) and early stopping that restores the
    best weights (when `early_stopping_patience` is set), both watching `monitor`."""
    callbacks = []
    if plateau_patience is not None:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=decay_factor, patience=plateau_patience, verbose=1))
    if early_stopping_patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, patience=early_stopping_patience, restore_best_weights=True, verbose=1))
    return callbacks
