"""Datasets that ship with embedding_net, by name: `register_dataset`, `get_dataset`,
`list_datasets`. A dataset is a function `(root) -> None` that writes the standard folder
layout (`root/<split>/<class>/<image>`) on first use; `data.dataset` in the config names one.
"""

from embedding_net.registry import Registry

_DATASETS = Registry("dataset")


def register_dataset(name, **info):
    """Registers a function `(root)` that materialises the dataset `name`; returns a decorator."""
    return _DATASETS.register(name, settings=(), **info)


def get_dataset(name):
    """The function registered as `name` (a `ConfigError` names the known ones)."""
    return _DATASETS.get(name)


def list_datasets():
    """The registered dataset names, sorted."""
    return _DATASETS.names()
