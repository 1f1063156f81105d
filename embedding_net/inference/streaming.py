"""Embedding a folder far larger than memory, resumably: `embed_folder_streaming`.

Images are decoded a batch at a time by `embedding_net.data.images.read_images` (a small pool of
threads; OpenCV releases the GIL while decoding) in one background thread, so the next batch is
being read while the model embeds the current one. Memory is bounded by two batches of images
and one chunk of embeddings, whatever the folder's size.

Why not `tf.data`: test.py runs the LiteRT copy of the model without ever importing TensorFlow
(about a second to start instead of several, `tests/test_layering.py`), and `inference/` must
not import TensorFlow; a thread pool over OpenCV gives the same overlap of reading and
embedding for this one sequential pass.

Resuming. Every `chunk_size` images (in the sorted order of `scan_image_folder`) the chunk's
embeddings are written atomically to `parts_dir/part-NNNNNN.npz` (no pickle). `parts_dir/
manifest.json` records the folder listing (a SHA-256 of the sorted relative paths, their count),
the chunk size, the model's SHA-256 and its input shape. A rerun after Ctrl-C or SIGKILL skips
the chunks already written; a changed folder or another model is refused (one line, naming the
folder to delete), never mixed in. The caller removes `parts_dir` once it has used the parts.
"""

import concurrent.futures
import hashlib
import json
import os

import numpy as np

from embedding_net.atomic import atomic_path, atomic_write_text
from embedding_net.data.folders import scan_image_folder
from embedding_net.data.images import read_images
from embedding_net.errors import DatasetError
from embedding_net.inference.encodings import embed_images, model_image_shape

CHUNK_SIZE = 2048
PARTS_FORMAT = "embedding_net.parts/1"


def listing_digest(folder):
    """SHA-256 of the relative paths of an `ImageFolder`, in its (sorted) order."""
    digest = hashlib.sha256()
    for path in folder.paths:
        digest.update(os.path.relpath(path, folder.root).encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()


def part_path(parts_dir, chunk):
    return os.path.join(parts_dir, f"part-{chunk:06d}.npz")


def _check_manifest(parts_dir, manifest):
    path = os.path.join(parts_dir, "manifest.json")
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                old = json.load(handle)
        except (OSError, ValueError):
            old = None
        if old != manifest:
            differs = [key for key in ("folder", "listing_sha256", "model_sha256", "chunk_size", "input_shape")
                       if not isinstance(old, dict) or old.get(key) != manifest[key]] or ["format"]
            raise DatasetError(f"{parts_dir} holds the unfinished embeddings of another run (its "
                               f"{', '.join(differs)} differ: folder changed since, another model or "
                               f"chunk size): delete that folder to start over, or rerun as before")
    else:
        os.makedirs(parts_dir, exist_ok=True)
        atomic_write_text(path, json.dumps(manifest, indent=1))


def embed_folder_streaming(model, folder, parts_dir, batch_size=256, chunk_size=CHUNK_SIZE,
                           model_sha256=None, progress=True, workers=None):
    """Embeds `folder/<class>/<image>` chunk by chunk into `parts_dir` (see the module docstring).

    Args:
        model: the embedding model (`predict(images, batch_size=, verbose=)`).
        folder: the labelled folder.
        parts_dir: the work folder of the parts; created, and reused by a rerun.
        batch_size: images embedded (and decoded) at a time.
        chunk_size: images per part file: the work a kill can lose.
        model_sha256: SHA-256 of the model file, recorded so a rerun with another model is refused.
        progress: a tqdm bar (images/s) on stderr when it is a terminal.
        workers: decoding threads (`read_images`' default when None).

    Returns:
        `(ImageFolder, part paths)`: the folder listing and its part files, in order.
    """
    listing = scan_image_folder(folder, min_images_per_class=1)
    height, width, channels = model_image_shape(model)
    _check_manifest(parts_dir, {
        "format": PARTS_FORMAT, "folder": os.path.abspath(folder), "images": len(listing),
        "listing_sha256": listing_digest(listing), "class_names": list(listing.class_names),
        "chunk_size": int(chunk_size), "model_sha256": model_sha256,
        "input_shape": [height, width, channels]})
    chunks = range(-(-len(listing) // chunk_size))
    parts = [part_path(parts_dir, c) for c in chunks]
    todo = [c for c in chunks if not os.path.isfile(parts[c])]
    batches = [(c, begin, min(begin + batch_size, (c + 1) * chunk_size, len(listing)))
               for c in todo for begin in range(c * chunk_size, min((c + 1) * chunk_size, len(listing)), batch_size)]
    from tqdm import tqdm

    bar = tqdm(total=len(listing), initial=len(listing) - sum(e - b for _, b, e in batches), unit="img",
               desc="embedding", disable=None if progress else True, smoothing=0.1)
    with bar:
        done = []
        for (chunk, _, end), result in zip(batches, embedded_batches(model, listing, batches, batch_size, workers)):
            done.append(result)
            bar.update(result[1] - result[0])
            if end == min((chunk + 1) * chunk_size, len(listing)):
                _write_part(parts[chunk], listing, done)
                done = []
    return listing, parts


def embedded_batches(model, listing, batches, batch_size=256, workers=None):
    """Yields `(begin, end, readable mask, embeddings of the readable, failed)` for each
    `(_, begin, end)` of `batches` over `listing.paths`, reading the next batch in a background
    thread while the model embeds this one."""
    height, width, channels = model_image_shape(model)

    def read(batch):
        return read_images(listing.paths[batch[1] : batch[2]], (height, width), channels, workers)

    with concurrent.futures.ThreadPoolExecutor(1) as loader:
        pending = loader.submit(read, batches[0]) if batches else None
        for i, (_, begin, end) in enumerate(batches):
            images, failed = pending.result()
            pending = loader.submit(read, batches[i + 1]) if i + 1 < len(batches) else None
            bad = {path for path, _ in failed}
            keep = np.array([p not in bad for p in listing.paths[begin:end]], bool)
            yield begin, end, keep, embed_images(model, images[keep], batch_size), failed


def embed_listing(model, listing, batch_size=256, workers=None):
    """`(embeddings [n, D], readable mask [N])` of an `ImageFolder`, in memory (no parts): the
    queries of an evaluation."""
    spans = [(0, b, min(b + batch_size, len(listing))) for b in range(0, len(listing), batch_size)]
    results = list(embedded_batches(model, listing, spans, batch_size, workers))
    if not results:
        return np.zeros((0, model.output_shape[-1]), np.float32), np.zeros(0, bool)
    return (np.concatenate([r[3] for r in results]).astype(np.float32),
            np.concatenate([r[2] for r in results]))


def _write_part(path, listing, done):
    keep = np.concatenate([k for _, _, k, _, _ in done])
    paths = [p for b, e, _, _, _ in done for p in listing.paths[b:e]]
    labels = np.concatenate([listing.labels[b:e] for b, e, _, _, _ in done])
    failed = [f"{p}: {reason}" for _, _, _, _, f in done for p, reason in f]
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, embeddings=np.concatenate([x for _, _, _, x, _ in done]).astype(np.float32),
                 labels=labels[keep].astype(np.int32), paths=np.array([p for p, k in zip(paths, keep) if k], str),
                 failed=np.array(failed, str))
        handle.flush()
        os.fsync(handle.fileno())


def read_part(path):
    """`(embeddings [n, D], labels [n] into the listing's class names, paths, failed)` of a part."""
    with np.load(path, allow_pickle=False) as part:
        return (part["embeddings"], part["labels"], [str(p) for p in part["paths"]],
                [str(f) for f in part["failed"]])
