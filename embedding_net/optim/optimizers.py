"""Optimizers by name: `register_optimizer`, `get_optimizer`, `list_optimizers`, and
`build_optimizer`, the one factory that the training run, the benchmarks and a notebook use.

A registered optimizer is a function `(learning_rate, **settings) -> keras optimizer`; its
settings are the keys of the config's `train` section that it reads (`momentum` and `nesterov`
for SGD, `weight_decay` for AdamW), so `train.momentum` with Adam is refused instead of ignored.

    build_optimizer("sgd", 0.1, momentum=0.9)
    build_optimizer("adam", build_learning_rate(1e-3, "cosine", total_steps=1000))
"""

import keras

from embedding_net.optim.fused_adam import Adam, AdamW
from embedding_net.optim.radam import RAdam
from embedding_net.registry import Registry, constructor_arguments

_OPTIMIZERS = Registry("optimizer")


def register_optimizer(name, settings=None, **info):
    """Registers an optimizer factory `(learning_rate, **settings)` as `name`; returns a decorator.
    Its settings default to its keyword arguments after `learning_rate` (which every run sets)."""
    def decorate(factory):
        chosen = settings
        if chosen is None:
            chosen = tuple(key for key in constructor_arguments(factory) if key != "learning_rate")
        return _OPTIMIZERS.register(name, settings=chosen, **info)(factory)
    return decorate


def get_optimizer(name):
    """The factory registered as `name` (a `ConfigError` names the known ones)."""
    return _OPTIMIZERS.get(name)


def list_optimizers():
    """The registered optimizer names, sorted."""
    return _OPTIMIZERS.names()


def optimizer_settings(name):
    """The keys of the config's `train` section that the optimizer `name` reads."""
    return _OPTIMIZERS.settings(name)


def build_optimizer(name, learning_rate, **settings):
    """The optimizer `name` with `learning_rate` (a float or a schedule) and its own settings;
    a setting it does not take is a `ValueError` naming the ones it does."""
    accepted = optimizer_settings(name)
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise ValueError(f"optimizer {name!r} takes {', '.join(accepted) or 'no settings'}. "
                         f"Received: {', '.join(unknown)}")
    return get_optimizer(name)(learning_rate, **settings)


@register_optimizer("adam")
def adam(learning_rate):
    """Adam (Kingma & Ba 2015); `embedding_net.optim.fused_adam.Adam`, Keras' with a fused update."""
    return Adam(learning_rate=learning_rate)


@register_optimizer("adamw")
def adamw(learning_rate, weight_decay=0.004):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019)."""
    return AdamW(learning_rate, weight_decay=weight_decay)


@register_optimizer("sgd")
def sgd(learning_rate, momentum=0.9, nesterov=False):
    return keras.optimizers.SGD(learning_rate, momentum=momentum, nesterov=nesterov)


@register_optimizer("rmsprop")
def rmsprop(learning_rate):
    return keras.optimizers.RMSprop(learning_rate=learning_rate)


@register_optimizer("radam")
def radam(learning_rate):
    """Rectified Adam (Liu et al. 2019), `embedding_net.optim.radam.RAdam`."""
    return RAdam(learning_rate=learning_rate)
