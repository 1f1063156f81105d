"""Learning-rate schedules by name: `register_schedule`, `get_schedule`, `list_schedules`, and
`build_learning_rate`; `plateau_callbacks` for the schedule that lives in callbacks.

A registered schedule is a function `(learning_rate, total_steps, **settings) -> learning rate
or keras schedule`; its settings are the keys of the config's `train` section it reads (in
epochs there; the training run converts them to steps), so `train.step_size` with the cosine
schedule is refused instead of ignored.

    build_learning_rate(1e-3, "cosine", total_steps=1000, warmup_steps=100)
"""

import keras

from embedding_net.registry import Registry

_SCHEDULES = Registry("learning-rate schedule")


def register_schedule(name, settings=None, **info):
    """Registers a schedule factory `(learning_rate, total_steps, **settings)`; returns a decorator."""
    return _SCHEDULES.register(name, settings=settings, **info)


def get_schedule(name):
    """The factory registered as `name` (a `ConfigError` names the known ones)."""
    return _SCHEDULES.get(name)


def list_schedules():
    """The registered schedule names, sorted."""
    return _SCHEDULES.names()


def schedule_settings(name):
    """The keys of the config's `train` section that the schedule `name` reads."""
    return _SCHEDULES.settings(name)


@register_schedule("constant", settings=())
def constant(learning_rate, total_steps):
    return learning_rate


@register_schedule("cosine", settings=("warmup_epochs",))
def cosine(learning_rate, total_steps, warmup_steps=0):
    """Decay to 1% over `total_steps`, after a linear warm-up from 0 over `warmup_steps`
    (capped at total_steps - 1)."""
    warmup = max(min(warmup_steps, total_steps - 1), 0)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else learning_rate,
        decay_steps=max(total_steps - warmup, 1), alpha=0.01,
        warmup_target=learning_rate if warmup else None, warmup_steps=warmup,
    )


@register_schedule("step", settings=("step_size", "decay_factor"))
def step(learning_rate, total_steps, step_size=1, decay_factor=0.5):
    """Times `decay_factor` every `step_size` steps."""
    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, decay_steps=step_size, decay_rate=decay_factor, staircase=True)


@register_schedule("plateau", settings=("plateau_patience", "decay_factor"), on_plateau=True)
def plateau(learning_rate, total_steps):
    """Constant here; `plateau_callbacks` lowers it when the monitored value stops improving."""
    return learning_rate


def reduces_on_plateau(name):
    """Whether the schedule `name` is lowered by `plateau_callbacks` during training."""
    return _SCHEDULES.entry(name).info.get("on_plateau", False)


def build_learning_rate(learning_rate, schedule="constant", total_steps=1, **steps):
    """A learning rate or a `keras.optimizers.schedules` object.

    Args:
        learning_rate: the peak (cosine) or initial (step) learning rate.
        schedule: a registered name: `constant`, `cosine`, `step` or `plateau`.
        total_steps: the optimizer steps of the whole run.
        **steps: the schedule's own arguments, in steps: `warmup_steps` (cosine), `step_size`
            and `decay_factor` (step).
    """
    return get_schedule(schedule)(learning_rate, total_steps, **steps)


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
