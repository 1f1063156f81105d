"""Experiment configuration: YAML -> validated, frozen dataclasses (`embedding_net.config.sections`).

Precedence: defaults < the YAML file < `--set section.key=value` overrides (values parsed as
YAML, so `--set train.epochs=3` gives an int and `--set model.weights=null` gives None).
Every error is a `ConfigError` with a one-line message naming the key and the received value.
Only `embedding_net.training` reads these objects; library classes take plain arguments.
"""

import dataclasses
import importlib
import math
import reprlib
import typing

import yaml

from embedding_net.atomic import atomic_write_text
from embedding_net.config.catalogue import active_catalogue
from embedding_net.config.components import applies, architecture_entry, check_components, check_moved_keys
from embedding_net.config.sections import Config
from embedding_net.errors import ConfigError


def _type_name(annotation):
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is tuple:
        args = typing.get_args(annotation)
        inner = {int: "integers", float: "numbers", str: "strings", dict: "mappings"}[args[0]]
        return f"a list of {inner}" if args[-1] is Ellipsis else f"a list of {len(args)} {inner}"
    return {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string", dict: "a mapping"}[annotation]


# How a received value is shown in a message: cut short, because a YAML file can hold a list of
# a million items, or aliases nested nine deep whose full repr would never end.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 8, 8, 6, 8
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 120, 120, 60


def _shown(value, limit=300):
    """`repr(value)` on one line and at most about `limit` characters, however big `value` is."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


# What PyYAML's constructors raise besides YAMLError: on an explicit tag with a value it cannot
# build (`!!timestamp x`, `!!bool x`, `!!int`), a date such as 2001-13-45, an int of more than
# 4300 digits, or brackets nested past Python's recursion limit.
_YAML_BUILD_ERRORS = (ValueError, KeyError, IndexError, AttributeError, TypeError, RecursionError)


class _NotFinite(ConfigError):
    """A number that is NaN or infinite."""


def _coerce(key, value, annotation):
    """Checks `value` against `annotation` and returns it in canonical form."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        for option in typing.get_args(annotation):
            if option is type(None) and value is None:
                return None
            if option is not type(None):
                try:
                    return _coerce(key, value, option)
                except _NotFinite:
                    raise  # the right type, a wrong value: say so rather than "number or null"
                except ConfigError:
                    pass
    elif origin is tuple:
        args = typing.get_args(annotation)
        if isinstance(value, (list, tuple)) and (args[-1] is Ellipsis or len(value) == len(args)):
            return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond the largest float
                number = math.inf
            if not math.isfinite(number):
                raise _NotFinite(f"{key} must be a finite number, received: {_shown(value)}")
            return number
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is dict:
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    raise ConfigError(f"{key} must be {_type_name(annotation)}, received: {_shown(value)}")


def _registry_choices(target):
    """The names of `target`, "module:attribute" naming a `list_*` function or a tuple (read
    from the catalogue file while one is in force: see `catalogue`)."""
    catalogue = active_catalogue()
    if catalogue is not None:
        return tuple(catalogue["choices"][target])
    module, _, attribute = target.partition(":")
    names = getattr(importlib.import_module(module), attribute)
    return tuple(names() if callable(names) else names)


def _check_registry_choices(config):
    """Second pass: the keys whose choices are a registry's names (imports the registries)."""
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        for item in dataclasses.fields(values):
            metadata, value = item.metadata, getattr(values, item.name)
            if "choices_from" in metadata and not (value is None and metadata["optional"]):
                _check_range(f"{section.name}.{item.name}", value,
                             {"choices": (None,) * metadata["optional"] + _registry_choices(metadata["choices_from"])})


def _check_range(key, value, metadata):
    if "choices" in metadata and value not in metadata["choices"]:
        names = ", ".join("null" if c is None else str(c) for c in metadata["choices"])
        raise ConfigError(f"{key} must be one of {names}, received: {_shown(value)}")
    if "max" in metadata and value is not None and value > metadata["max"]:
        raise ConfigError(f"{key} must be <= {metadata['max']}, received: {_shown(value)}")
    if "min" in metadata and value is not None:
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            too_small = v <= metadata["min"] if metadata.get("exclusive") else v < metadata["min"]
            if too_small:
                relation = ">" if metadata.get("exclusive") else ">="
                raise ConfigError(f"{key} must be {relation} {metadata['min']}, received: {_shown(value)}")


def _build_section(name, cls, values):
    if not isinstance(values, dict):
        raise ConfigError(f"section '{name}' must be a mapping of keys to values, received: {_shown(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in fields:
            raise ConfigError(
                f"unknown key {_shown(f'{name}.{key}')}; valid keys in '{name}': {', '.join(fields)}"
            )
    kwargs = {}
    for key, value in values.items():
        full_key = f"{name}.{key}"
        value = _coerce(full_key, value, hints[key])
        _check_range(full_key, value, fields[key].metadata)
        kwargs[key] = value
    return cls(**kwargs)


def _check_consistency(config):
    height, width, channels = config.model.input_shape
    if channels not in (1, 3):
        raise ConfigError(f"model.input_shape must end with 1 or 3 channels, received: {list(config.model.input_shape)}")
    freeze = config.model.freeze
    if isinstance(freeze, str) and freeze not in ("none", "all") or isinstance(freeze, int) and freeze < 0:
        raise ConfigError(f"model.freeze must be none, all or a number of last layers to train, received: {freeze!r}")
    if config.train.decay_factor >= 1:
        raise ConfigError(f"train.decay_factor must be < 1, received: {config.train.decay_factor}")
    if config.loss.positive_margin >= config.loss.negative_margin:
        raise ConfigError("loss.positive_margin must be below loss.negative_margin, received: "
                          f"{config.loss.positive_margin} and {config.loss.negative_margin}")
    if config.data.val_ratio is not None and config.data.val_ratio >= 1:
        raise ConfigError(f"data.val_ratio must be < 1, received: {config.data.val_ratio}")
    if not config.encodings.splits:
        raise ConfigError("encodings.splits must name at least one split, received: []")


def _root_wins(config):
    """A folder the user names is what trains: `data.root` set on top of a config that reads a
    shipped dataset (the default one does) drops `data.dataset`, so the run's config.yml says
    what was read."""
    if config.data.root is not None and config.data.dataset is not None:
        return dataclasses.replace(config, data=dataclasses.replace(config.data, dataset=None))
    return config


def _check_siamese_head(model, loss):
    # The euclidean head outputs a distance (contrastive loss), the l1 head a probability.
    head_losses = architecture_entry(model.architecture).info.get("head_losses")
    if head_losses and loss.name != head_losses[model.siamese_head]:
        raise ConfigError(f"loss.name of a Siamese model with model.siamese_head {model.siamese_head} "
                          f"must be {head_losses[model.siamese_head]}, received: {loss.name!r}")


def config_from_dict(raw):
    """Builds a validated `Config` from nested dicts (the parsed YAML).

    Two passes: what needs no registry (keys, types, ranges, moved keys) is checked first, so
    those mistakes surface at once; then the names of components and the settings they own,
    which import the registries (and, through the losses, Keras)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of sections, received: {_shown(raw)}")
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    for name in raw:
        if name not in sections:
            raise ConfigError(f"unknown section {_shown(str(name))}; valid sections: {', '.join(sections)}")
    # An empty section is null in YAML; any other value that is not a mapping is refused (an
    # empty list, 0 or "" too, which later checks would otherwise take for a mapping).
    raw = {name: dict(values) if isinstance(values, dict) else {} if values is None else values
           for name, values in raw.items()}
    check_moved_keys(raw)
    hints = typing.get_type_hints(Config)
    config = Config(**{name: _build_section(name, hints[name], raw[name]) for name in raw})
    _check_consistency(config)
    config = _root_wins(config)
    _check_registry_choices(config)
    check_components(raw)
    _check_siamese_head(config.model, config.loss)
    return config


def parse_override(text):
    """Splits `section.key=value` into (["section", "key"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects section.key=value, received: {_shown(text)}")
    path, _, value_text = text.partition("=")
    keys = path.strip().split(".")
    if len(keys) != 2 or not all(keys):
        raise ConfigError(f"--set expects section.key=value, received: {_shown(text)}")
    try:
        value = yaml.safe_load(value_text)
    except (yaml.YAMLError, *_YAML_BUILD_ERRORS):
        raise ConfigError(f"--set {_shown(path.strip())}: the value is not valid YAML, "
                          f"received: {_shown(value_text)}") from None
    return keys, value


def _yaml_error(path, error):
    """One line naming the file, the line and column, and what PyYAML found there."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{path}{where}: not valid YAML: {problem}"


def load_config(path=None, overrides=(), chosen=None):
    """Reads a YAML config file, applies `chosen` ({"section.key": value}, e.g. the choices
    that `train.py --data DIR` makes from the data), then the `section.key=value` overrides,
    and validates the result."""
    raw = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                raw = yaml.safe_load(handle)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as error:
            raise ConfigError(_yaml_error(path, error)) from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid YAML: brackets or indentation nested too deeply") from None
        except _YAML_BUILD_ERRORS as error:
            raise ConfigError(f"{path}: not valid YAML: a value PyYAML cannot build "
                              f"({type(error).__name__}: {_shown(str(error))})") from None
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, received: {_shown(raw)}")
    raw = {name: dict(values or {}) if isinstance(values, dict) or values is None else values
           for name, values in raw.items()}
    parsed = [(tuple(full.split(".")), value) for full, value in (chosen or {}).items()]
    for (section, key), value in parsed + [parse_override(text) for text in overrides]:
        if not isinstance(raw.setdefault(section, {}), dict):
            raise ConfigError(f"section {_shown(section)} must be a mapping, received: {_shown(raw[section])}")
        raw[section][key] = value
    return config_from_dict(raw)


def config_to_dict(config):
    """The config as plain nested dicts and lists, ready for YAML: every key that applies to
    the components it chose (so that it loads back as the same config), and no other."""
    def plain(value):
        return list(plain(v) for v in value) if isinstance(value, tuple) else value
    full = {name: {k: plain(v) for k, v in dataclasses.asdict(section).items()}
            for name, section in ((f.name, getattr(config, f.name)) for f in dataclasses.fields(config))}
    return {name: {k: v for k, v in values.items() if applies(full, f"{name}.{k}")} for name, values in full.items()}


def save_config(config, path):
    """Writes the resolved config as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
