"""The registries' names and settings as a JSON file, so that a config is checked whole before
TensorFlow is imported: the scripts validate against this catalogue (a second, not the six to
forty of Keras' import), and only then import what trains.

The file is generated from the live registries (`python -m embedding_net.config.catalogue`);
tests/config/test_catalogue.py fails, naming that command, when a registration changes without
it. Library callers validate against the live registries, which also know what they register
themselves (`catalogue_registries()` is only entered by the commands).
"""

import contextlib
import dataclasses
import json
import os
import types

from embedding_net.errors import ConfigError

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalogue.json")
_ACTIVE = []  # the catalogue in force, innermost last; empty: the live registries


def build_catalogue():
    """The catalogue of the live registries (imports them, and so Keras)."""
    from embedding_net.config.components import live_registries
    from embedding_net.config.loading import _registry_choices  # live here: no catalogue in force
    from embedding_net.config.sections import Config

    losses, mining, architectures, optim = live_registries()
    choices = {}
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(section.type):
            target = item.metadata.get("choices_from")
            if target:
                choices[target] = list(_registry_choices(target))
    kinds = sorted({architectures.architecture_entry(n).info["mining"] for n in architectures.list_architectures()})
    return {
        "choices": choices,
        "losses": {a: {n: list(losses.loss_settings(n, a)) for n in losses.list_losses(a)} for a in losses.ARCHITECTURES},
        "minings": {kind: list(mining.list_minings(kind)) for kind in kinds},
        "architectures": {n: {"settings": list(architectures.architecture_entry(n).settings),
                              "info": architectures.architecture_entry(n).info}
                          for n in architectures.list_architectures()},
        "optimizers": {n: list(optim.optimizer_settings(n)) for n in optim.list_optimizers()},
        "schedules": {n: list(optim.schedule_settings(n)) for n in optim.list_schedules()},
    }


def load_catalogue(path=PATH):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _named(table, kind, name):
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


def as_registries(catalogue):
    """The catalogue in the shape of the registry modules that `components` calls."""
    losses = types.SimpleNamespace(
        ARCHITECTURES=tuple(catalogue["losses"]),
        list_losses=lambda a: sorted(_named(catalogue["losses"], "architecture", a)),
        loss_settings=lambda n, a="embedding": tuple(_named(_named(catalogue["losses"], "architecture", a), "loss", n)))
    mining = types.SimpleNamespace(list_minings=lambda kind="batch": list(_named(catalogue["minings"], "mining kind", kind)))
    architectures = types.SimpleNamespace(
        list_architectures=lambda: sorted(catalogue["architectures"]),
        architecture_entry=lambda n: types.SimpleNamespace(
            settings=tuple(_named(catalogue["architectures"], "architecture", n)["settings"]),
            info=_named(catalogue["architectures"], "architecture", n)["info"]))
    optim = types.SimpleNamespace(
        list_optimizers=lambda: sorted(catalogue["optimizers"]),
        optimizer_settings=lambda n: tuple(_named(catalogue["optimizers"], "optimizer", n)),
        list_schedules=lambda: sorted(catalogue["schedules"]),
        schedule_settings=lambda n: tuple(_named(catalogue["schedules"], "schedule", n)))
    return losses, mining, architectures, optim


def active_catalogue():
    """The catalogue in force, or None when configs are checked against the live registries."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def catalogue_registries(path=PATH):
    """Configs loaded in the block are checked against the catalogue file: no TensorFlow."""
    _ACTIVE.append(load_catalogue(path))
    try:
        yield
    finally:
        _ACTIVE.pop()


if __name__ == "__main__":
    from embedding_net.atomic import atomic_write_text

    atomic_write_text(PATH, json.dumps(build_catalogue(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PATH}")
