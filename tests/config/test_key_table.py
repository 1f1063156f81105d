"""One default per key: the README's key table lists every config key with the default that
`embedding_net.config.sections` gives it."""

import dataclasses
import os
import re

import yaml

from embedding_net.config.sections import Config

README = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "README.md")


def _table():
    """{key: default as written} of the rows of the README's "## Config" section."""
    text = open(README, encoding="utf-8").read()
    section = text[text.index("\n## Config\n"):]
    section = section[:section.index("\n## ", 1)]
    table = {}
    for keys, defaults in re.findall(r"^\| ((?:`[a-z_]+\.[a-z_0-9]+`(?:, )?)+) \| ([^|]*) \|", section, re.M):
        names, values = re.findall(r"`([a-z_]+\.[a-z_0-9]+)`", keys), re.findall(r"`([^`]*)`", defaults)
        assert len(values) >= 1, keys
        for index, name in enumerate(names):
            table[name] = yaml.safe_load(values[min(index, len(values) - 1)])
    return table


def test_every_key_is_in_the_table_with_its_default():
    table = _table()
    for section in dataclasses.fields(Config):
        for item in dataclasses.fields(section.type):
            key = f"{section.name}.{item.name}"
            default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
            assert key in table, f"{key} is missing from the README's key table"
            assert table[key] == (list(default) if isinstance(default, tuple) else default), key
