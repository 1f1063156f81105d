"""Enrolment into a gallery file: what `test.py --enroll DIR --encodings OUT` does.

To an `.npz` it is today's `enroll_folder` (the whole folder in memory). To an index file
(`.enidx`) the folder is embedded by `embed_folder_streaming` (bounded memory, resumable from
`OUT.parts/`), then the index is written, or with `append` loaded and extended without a rebuild.

The whole enrolment, embedding included, holds the index's writer lock (`exclusive_lock`): a
second enrolment into the same file waits up to `lock_timeout` seconds and then fails with one
line, instead of losing the first one's images or sharing its work folder. The index file is
replaced atomically at the end, so a kill at any moment (SIGKILL included) leaves the previous
index whole, and a rerun continues from the parts already embedded.
"""

import os
import shutil
import warnings

from embedding_net.errors import UserError
from embedding_net.index import (EmbeddingIndex, IndexBackendError, exclusive_lock, load_index,
                                 read_manifest, save_index)
from embedding_net.inference.encodings import enroll_folder, save_encodings
from embedding_net.inference.gallery import choose_backend, is_index_path, run_distance
from embedding_net.inference.litert import file_sha256
from embedding_net.inference.streaming import CHUNK_SIZE, embed_folder_streaming, read_part


def enroll(model, weights, folder, output, append=False, backend=None, lock_timeout=60.0,
           batch_size=256, chunk_size=CHUNK_SIZE, progress=True):
    """Enrols the labelled `folder` into the gallery file `output` (see the module docstring).

    Returns:
        A summary dict: `encodings` (the file), `images`, `classes` (of the whole gallery),
        `added` (images of this folder), and `backend` for an index.
    """
    if not is_index_path(output):
        if append or backend:
            raise UserError(f"--append and --backend need an index file ({output} is not .enidx)")
        result = enroll_folder(model, folder, metadata={"model": os.path.abspath(weights)})
        save_encodings(output, result)
        return {"encodings": output, "images": len(result.labels), "classes": len(result.class_names),
                "added": len(result.labels)}
    if backend is not None:
        choose_backend(0, backend)  # an unknown name fails before any work
    sha = file_sha256(weights)
    with exclusive_lock(output, timeout=lock_timeout):
        existing = _existing(output, model, weights, sha, backend) if append else None
        listing, parts = embed_folder_streaming(model, folder, output + ".parts", batch_size, chunk_size,
                                                model_sha256=sha, progress=progress)
        if existing is None:
            index = EmbeddingIndex(int(model.output_shape[-1]), run_distance(weights) or "euclidean",
                                   choose_backend(len(listing), backend), capacity=len(listing))
            index.metadata = {"model": os.path.abspath(weights)}
        else:
            index = existing
        added, failed = 0, []
        for part in parts:
            embeddings, labels, paths, bad = read_part(part)
            index.add(embeddings, [listing.class_names[label] for label in labels], paths)
            added, failed = added + len(labels), failed + bad
        if failed:
            warnings.warn(f"skipped {len(failed)} unreadable image(s) of {folder}: {failed[0]}"
                          + (" ..." if len(failed) > 1 else ""), stacklevel=2)
        index.metadata.update({"model": os.path.abspath(weights), "distance": index.distance,
                               "embedding_size": index.dimension, "num_images": index.count,
                               "num_classes": len(index.class_names)})
        save_index(index, output, model_sha256=sha)
        shutil.rmtree(output + ".parts", ignore_errors=True)
    return {"encodings": output, "images": index.count, "classes": len(index.class_names),
            "added": added, "backend": index.backend}


def _existing(output, model, weights, sha, backend):
    """The index to append to, checked against the model (hash, dimension, distance)."""
    if not os.path.isfile(output):
        raise UserError(f"--append needs an existing index: {output} not found")
    recorded = read_manifest(output).get("model_sha256")  # made without a model: check the rest
    index = load_index(output, expect_model_sha256=sha if recorded else None, expect_dimension=int(model.output_shape[-1]),
                       expect_distance=run_distance(weights), mmap=True)
    if backend is not None and backend != index.backend:
        raise IndexBackendError(f"index {output} uses backend {index.backend!r}: --append keeps it "
                                f"(received --backend {backend}); enrol without --append to rebuild")
    return index
