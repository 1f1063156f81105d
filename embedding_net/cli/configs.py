"""The shipped configs (embedding_net/configs/, linked from the repository's configs/) by name,
and the config sections as `--help` lists them."""

import dataclasses
import glob
import textwrap
import os

from embedding_net.errors import ConfigError

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def list_configs():
    """The names of the shipped configs, sorted (`omniglot`, `omniglot_supcon`, ...)."""
    return sorted(os.path.basename(path)[:-4] for path in glob.glob(os.path.join(SHIPPED, "*.yml")))


def resolve_config_path(value):
    """`value` when it is a file, else the shipped config it names (with or without `.yml`);
    a value that is neither is a `ConfigError` naming the shipped ones."""
    if os.path.isfile(value):
        return value
    name = value[:-4] if value.endswith(".yml") else value
    if os.sep not in value and name in list_configs():
        return os.path.join(SHIPPED, f"{name}.yml")
    raise ConfigError(f"config file not found: {value} (shipped configs: {', '.join(list_configs())})")


def sections_help(width=100):
    """One entry per config section with its keys, wrapped for `--help`."""
    from embedding_net.config.sections import Config

    lines = []
    for section in dataclasses.fields(Config):
        keys = ", ".join(field.name for field in dataclasses.fields(section.type))
        lines.append(textwrap.fill(keys, width, initial_indent=f"  {section.name + ':':<12}",
                                   subsequent_indent=" " * 14, break_on_hyphens=False))
    return "\n".join(lines)
