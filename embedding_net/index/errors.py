"""Errors of the nearest-neighbour index: one-line messages that name the file or the setting.

They derive from `embedding_net.errors.UserError`, so the scripts print them and exit with
status 2 instead of showing a traceback: each one is something the user can fix (rebuild the
index, pass the right model, wait for the other writer, choose a backend that exists).
"""

from embedding_net.errors import UserError


class IndexFileError(UserError):
    """An index file that is missing, truncated, corrupted, of another version, or made with
    another model, dimension or distance than the caller expects."""


class IndexLockError(IndexFileError):
    """Another writer held the index's lock file for longer than the caller was willing to wait."""


class IndexBackendError(UserError):
    """An index backend name that is not registered, or options it does not accept."""


def file_error(path, problem):
    """An `IndexFileError` whose one-line message starts with the file: `index PATH: problem`."""
    return IndexFileError(f"index {path}: {problem}".replace("\n", " "))


class IndexClassError(UserError):
    """A class name or id that the index does not hold."""
