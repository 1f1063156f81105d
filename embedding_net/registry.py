"""Registries: a name in a config is looked up here, never matched in an if-chain.

Each family of components (losses, backbones, minings, distances, optimizers, learning-rate
schedules, augmentation presets, datasets, architectures, index backends) keeps one `Registry`,
and its package exposes `register_*`, `get_*` and `list_*` around it. The config validates a
chosen name against `names()`, and a component's settings against `settings(name)`, so no list
of choices is ever copied by hand.

A component's settings are the config keys it reads. By default they are the keyword arguments
of the registered class or function (minus Keras' own `name`, `dtype` and `reduction`); a
registration can name them instead (`settings=(...)`), for a component whose constructor takes
objects built from several keys. Dotted settings (`data.batch_size`) belong to another section.

Nothing here imports TensorFlow: registries of NumPy components stay importable without it.
"""

import inspect

from embedding_net.errors import ConfigError

# Keyword arguments every Keras object takes; they are not settings of a component.
_KERAS_ARGUMENTS = frozenset({"name", "dtype", "reduction", "kwargs", "self"})


class Entry:
    """One registered component: its name, the object, the settings it reads and free notes."""

    def __init__(self, name, obj, settings, info):
        self.name = name
        self.obj = obj
        self.settings = settings
        self.info = info

    def __repr__(self):
        return f"Entry({self.name!r}, {getattr(self.obj, '__name__', self.obj)!r}, settings={self.settings})"


def constructor_arguments(obj):
    """The keyword arguments of a class or function, less the ones every Keras object takes."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters
                 if p.name not in _KERAS_ARGUMENTS and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


class Registry:
    """Names -> components of one family (`kind` names the family in error messages)."""

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name, settings=None, **info):
        """A decorator that registers its class or function as `name`."""
        def decorate(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered already "
                                 f"(by {self._entries[name].obj!r})")
            chosen = constructor_arguments(obj) if settings is None else tuple(settings)
            self._entries[name] = Entry(name, obj, chosen, info)
            return obj
        return decorate

    def names(self):
        """The registered names, sorted."""
        return sorted(self._entries)

    def entry(self, name):
        """The `Entry` of `name`; an unknown name is a `ConfigError` listing the known ones."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name):
        """The class or function registered as `name`."""
        return self.entry(name).obj

    def settings(self, name):
        """The config keys that the component `name` reads."""
        return self.entry(name).settings

    def __contains__(self, name):
        return name in self._entries

    def __iter__(self):
        return iter(self.names())


class RegistryGroup:
    """One `Registry` per kind (losses per architecture, minings per kind): `group[kind]` is the
    kind's registry; an unknown kind is a `ConfigError` listing the known ones."""

    def __init__(self, kinds, describe, kind_name):
        self.kinds = tuple(kinds)
        self.kind_name = kind_name
        self._registries = {kind: Registry(describe(kind)) for kind in self.kinds}

    def __getitem__(self, kind):
        if kind not in self._registries:
            raise ConfigError(f"unknown {self.kind_name} {kind!r}; available: {', '.join(self.kinds)}")
        return self._registries[kind]
