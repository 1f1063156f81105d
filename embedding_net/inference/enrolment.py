"""Enrolment into a gallery file: what `test.py --enroll DIR --encodings OUT` does.

To an `.npz` it is today's `enroll_folder` (the whole folder in memory). To an index file
(`.enidx`) the folder is embedded by `embed_folder_streaming` (bounded memory, resumable from
`OUT.parts/`), then the index is written, or with `append` loaded and extended without a rebuild.

The whole enrolment, embedding included, holds the index's writer lock (`exclusive_lock`): a
second enrolment into the same file waits up to `lock_timeout` seconds and then fails with one
line, instead of losing the first one's images or sharing its work folder. The index file is
replaced atomically at the end, so a kill at any moment (SIGKILL included) leaves the previous
index whole, and a rerun continues from the parts already embedded.

What "unknown" means for the new gallery is stored in its metadata: `threshold`, the verification
threshold of the training run that made the model (`run_threshold`: from the gallery train.py
wrote beside it, named in `threshold_source`), kept as it is when appending; and `rejection`, the
class radii of `embedding_net.inference.rejection`, calibrated again on the whole gallery after
every enrolment. A model without such a run gets no threshold, said in one line on stderr.
"""

import os
import shutil
import sys
import warnings

from embedding_net.errors import UserError
from embedding_net.index import (EmbeddingIndex, IndexBackendError, exclusive_lock, load_index,
                                 read_manifest, save_index)
from embedding_net.inference.encodings import enroll_folder, save_encodings
from embedding_net.inference.gallery import choose_backend, is_index_path, run_distance, run_threshold
from embedding_net.inference.litert import file_sha256
from embedding_net.inference.rejection import TARGET_LOSS, calibrate, calibrate_index
from embedding_net.inference.streaming import CHUNK_SIZE, embed_folder_streaming, read_part


def enroll(model, weights, folder, output, append=False, backend=None, lock_timeout=60.0,
           batch_size=256, chunk_size=CHUNK_SIZE, progress=True, target_loss=TARGET_LOSS):
    """Enrols the labelled `folder` into the gallery file `output` (see the module docstring).

    `target_loss`: the share of in-domain queries the class radii may answer "unknown"
    (`embedding_net.inference.rejection.calibrate`).

    Returns:
        A summary dict: `encodings` (the file), `images`, `classes` (of the whole gallery),
        `added` (images of this folder), `threshold` (None when unknown), and `backend` for an
        index.
    """
    if not is_index_path(output):
        if append or backend:
            raise UserError(f"--append and --backend need an index file ({output} is not .enidx)")
        # The run's distance, as for an index: the inherited threshold is in its units.
        result = enroll_folder(model, folder, metadata={"model": os.path.abspath(weights),
                                                        "distance": run_distance(weights) or "euclidean"})
        _describe_unknown(result.metadata, weights, None, output, lambda: calibrate(
            result.embeddings, result.labels, result.class_names, result.metadata["distance"], target_loss))
        save_encodings(output, result)
        return {"encodings": output, "images": len(result.labels), "classes": len(result.class_names),
                "added": len(result.labels), "threshold": result.metadata.get("threshold")}
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
        _describe_unknown(index.metadata, weights, sha, output, lambda: calibrate_index(index, target_loss))
        save_index(index, output, model_sha256=sha)
        shutil.rmtree(output + ".parts", ignore_errors=True)
    return {"encodings": output, "images": index.count, "classes": len(index.class_names),
            "added": added, "threshold": index.metadata.get("threshold"), "backend": index.backend}


def _describe_unknown(metadata, weights, sha, output, calibration):
    """Puts the run's threshold (unless the gallery has one) and fresh class radii into
    `metadata`; says in one line on stderr when no threshold is known."""
    rejection = calibration()
    if rejection is None:
        metadata.pop("rejection", None)  # no class with two images: nothing to measure a radius on
    else:
        metadata["rejection"] = rejection
    if "threshold" in metadata:
        return
    threshold, source = run_threshold(weights, sha)
    if threshold is not None:
        metadata.update(threshold=threshold, threshold_source=source)
        return
    then = ("only beyond its classes' radii" if rejection is not None else
            "never (no class has two images to calibrate a radius), unless test.py gets --threshold")
    print(f"note: no threshold from training beside {weights} (train.py's encodings.enidx or "
          f"encodings.npz); test.py will answer 'unknown' for {output} {then}", file=sys.stderr)


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
