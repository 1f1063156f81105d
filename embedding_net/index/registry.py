"""Index backends by name: `register_backend`, `get_backend`, `list_backends`, and `Backend`.

A backend is a class that stores prepared vectors (see `embedding_net.index.distances`) under
positional ids 0, 1, 2, ... in the order they were added, and answers k-nearest-neighbour
queries in the units of the index's distance. Everything else (labels, class names, paths,
removed classes, files) is `EmbeddingIndex`'s job, identical for every backend, so a backend is
small and a new one is one decorated class in one module::

    @register_backend("mine")
    class MyBackend(Backend):
        ...

`EmbeddingIndex` never tests a backend's name: it calls the methods below and reads the class
attributes `approximate` and `deletes`.
"""

import numpy as np

from embedding_net.index.errors import IndexBackendError

_BACKENDS = {}


class Backend:
    """The interface every backend implements; the methods document the contract.

    Attributes:
        name: the registry name (set by `register_backend`).
        approximate: False only for a backend whose results are the exact k nearest.
        deletes: True when `delete` really removes vectors (ids after them shift down); False
            when removed ids are only filtered out of results by `EmbeddingIndex`.
    """

    name = None
    approximate = True
    deletes = False

    def __init__(self, dimension, distance, **options):
        self.dimension, self.distance = int(dimension), distance

    @property
    def options(self):
        """The JSON-serialisable options that rebuild an equivalent backend (saved in files)."""
        return {}

    @property
    def size(self):
        """How many vectors are stored, removed ones included."""
        raise NotImplementedError

    def add(self, vectors):
        """Appends prepared float32 [n, D] vectors; they get ids size, size + 1, ..."""
        raise NotImplementedError

    def reserve(self, count):
        """Makes room for `count` vectors in all, so that adding up to that many never copies
        what is stored (arrays that grow by doubling briefly hold twice the index). Optional."""

    def search(self, queries, k):
        """(float32 distances [Q, k], int64 ids [Q, k]) nearest first; -1 / +inf pad short rows."""
        raise NotImplementedError

    def vectors(self, ids):
        """float32 [n, D] stored (prepared) vectors of `ids`."""
        raise NotImplementedError

    def delete(self, keep):
        """Keeps only the vectors where the bool mask `keep` [size] is True (if `deletes`)."""
        raise NotImplementedError(f"the {self.name} backend cannot delete vectors")

    def blobs(self):
        """{name: numpy array, list of arrays (concatenated on save) or bytes} to save."""
        raise NotImplementedError

    @classmethod
    def from_blobs(cls, dimension, distance, options, blobs, mmap):
        """The backend saved by `blobs`; `blobs` is an `embedding_net.index.container.Blobs`."""
        raise NotImplementedError


def register_backend(name):
    """Class decorator: registers a `Backend` subclass under `name` (a second one is an error)."""
    def decorate(cls):
        if name in _BACKENDS and _BACKENDS[name] is not cls:
            raise ValueError(f"index backend {name!r} is registered twice")
        cls.name = name
        _BACKENDS[name] = cls
        return cls
    return decorate


def list_backends():
    """The registered backend names, exact first, then alphabetically."""
    return sorted(_BACKENDS, key=lambda name: (_BACKENDS[name].approximate, name))


def get_backend(name):
    """The backend class registered as `name`, or an `IndexBackendError` listing the others."""
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        raise IndexBackendError(f"unknown index backend {name!r}; available: "
                                f"{', '.join(list_backends())}") from None


def pad_missing(distances, ids):
    """Sets the distance of missing results (id < 0) to +inf; returns (distances, int64 ids)."""
    ids = np.asarray(ids, np.int64)
    distances = np.array(distances, np.float32, copy=True)
    distances[ids < 0] = np.inf
    return distances, ids
