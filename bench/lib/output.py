"""Results: atomic JSON and text files, number formatting and markdown tables."""

import json
import os

from lib.paths import RESULTS  # first: puts the repository on sys.path

from embedding_net import atomic as embedding_net_atomic  # noqa: E402


def atomic_write_json(path, obj):
    """Writes `obj` as indented JSON to `path` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=True) + "\n")


def atomic_write_text(path, text):
    """Writes `text` to `path` atomically (the package's own writer); returns the path."""
    embedding_net_atomic.atomic_write_text(path, text)
    return path


def fmt(value, digits=1, percent=False):
    """A table cell: '-' for None/NaN, thousands separators, optional percent."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    try:
        if value != value:  # NaN
            return "-"
    except TypeError:
        return str(value)
    if percent:
        return f"{100 * value:.{digits}f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def markdown_table(headers, rows):
    """A GitHub markdown table (list of row lists, cells already strings or numbers)."""
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def print_table(title, headers, rows):
    print(f"\n## {title}\n")
    print(markdown_table(headers, rows))
    print(flush=True)


def default_output(name):
    return os.path.join(RESULTS, f"{name}.json")
