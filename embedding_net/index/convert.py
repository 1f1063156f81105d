"""`exact_copy`: the images of any index in the `exact` backend, for exact answers from an
approximate index file (`test.py --exact`) and for measuring its recall against the truth.

The vectors are read back from the backend (`EmbeddingIndex.vectors`) `chunk_rows` at a time and
added to a new exact index reserved at its final size, so the copy costs the raw vectors once
(512 MB for a million 128-d images) and no more. Removed images are left out: the copy's ids are
positions in `alive_ids(index)`.
"""

import numpy as np

from embedding_net.index.base import EmbeddingIndex


def alive_ids(index):
    """int64 ids of the images of `index` that searches can return, in id order."""
    return np.flatnonzero(np.asarray(index.labels) >= 0)


def exact_copy(index, chunk_rows=65536):
    """A new exact `EmbeddingIndex` of the live images of `index`: same class names (in the same
    order, so class ids agree), paths, metadata and model hash."""
    ids = alive_ids(index)
    labels = np.asarray(index.labels)
    copy = EmbeddingIndex.build(np.zeros((0, index.dimension), np.float32), np.zeros(0, np.int64),
                                index.class_names, paths=None if index.paths is None else [],
                                distance=index.distance, backend="exact", capacity=len(ids))
    paths = index.paths
    for begin in range(0, len(ids), chunk_rows):
        chunk = ids[begin : begin + chunk_rows]
        copy.add(index.vectors(chunk), labels[chunk],
                 None if paths is None else [paths[i] for i in chunk])
    copy.metadata, copy.model_sha256 = dict(index.metadata), index.model_sha256
    return copy
