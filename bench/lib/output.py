"""Results: atomic JSON and text files, number formatting and markdown tables."""

import json
import os
import tempfile

from lib.paths import RESULTS


def atomic_write_json(path, obj):
    """Writes `obj` as indented JSON to `path` via a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(obj, out, indent=1, allow_nan=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".txt", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
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
