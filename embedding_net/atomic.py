"""Atomic file writes: write a temporary file in the same folder, then rename it into place.

A crash at any moment leaves either the old file or the new one, never a torn one.
"""

import contextlib
import csv
import errno
import os
import shutil
import tempfile

from embedding_net.errors import WriteError

# The errors of a disk that refuses a write: full, over quota, file too large, read-only, failing.
_REFUSED = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})

# The process's file-creation mask, read once: reading it means setting it, and a mask of 0
# even for an instant would give files other threads create meanwhile mode 0666.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _raise_if_refused(path, error):
    """Raises `error` (from writing `path`'s temporary or renaming it) as a one-line `WriteError`
    when the disk refused the write, so that the scripts print it instead of a traceback; returns
    for any other error, which the caller re-raises as it is."""
    if isinstance(error, OSError) and error.errno in _REFUSED:
        kind = "folder" if os.path.isdir(path) else "file"
        kept = f"the previous {kind} is kept" if os.path.lexists(path) else "nothing was written"
        raise WriteError(f"cannot write {path}: {error.strerror or error}; {kept}") from error


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; renames it onto `path` if the block succeeds.

    The temporary name keeps the extension of `path` (Keras insists on `.keras`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    stem, extension = os.path.splitext(os.path.basename(path))
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{extension}", dir=folder)
    except OSError as error:  # no room even for an empty file
        _raise_if_refused(path, error)
        raise
    os.close(handle)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would.
    os.chmod(temporary, 0o666 & ~_UMASK)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        _raise_if_refused(path, error)
        raise


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a new empty folder next to `path`; puts it in place of `path` if the block succeeds.

    A folder cannot be renamed over a non-empty one, so an existing `path` is first renamed aside,
    then deleted: a reader sees the old folder or the new one, never a half-written one (a crash
    between the two renames leaves no `path`, and the old folder beside it as `.<name>.old.*`).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(os.path.normpath(path))
    temporary = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.chmod(temporary, 0o777 & ~_UMASK)  # mkdtemp's 0700, made what a plain mkdir gives
    try:
        yield temporary
        aside = None
        if os.path.lexists(path):
            aside = tempfile.mkdtemp(prefix=f".{name}.old.", dir=folder)
            os.replace(path, os.path.join(aside, name))
        try:
            os.replace(temporary, path)
        except BaseException:
            if aside is not None:  # the old folder goes back where it was
                os.replace(os.path.join(aside, name), path)
            raise
        finally:
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
    except OSError as error:
        _raise_if_refused(path, error)
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)  # gone already once renamed into place


def atomic_write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_csv(path, header, rows):
    """Writes a CSV file (UTF-8, the `csv` module's quoting: a cell with a comma, a quote or a
    line break is quoted and its quotes doubled) atomically; the one CSV writer of the package."""
    with atomic_path(path) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
            handle.flush()
            os.fsync(handle.fileno())
