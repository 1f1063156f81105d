"""Answering "unknown" to queries unlike the gallery: a radius per class, calibrated on it.

train.py stores one global distance, `metadata["threshold"]`: the verification threshold of
`evaluation.verification`, which separates same-class *pairs* of images from different-class
pairs. That is a loose bound for a query's *nearest* image: on the default Omniglot run it is
0.99, while photographs, noise and blank pages land 0.16-0.77 from some character, so none of
them is rejected. One tighter distance does not help either: classes differ in how spread out
their images are, and the distance that keeps a scribbly class's drawings is no limit for a
tight class (`bench/unknown.py`: at 2% of in-domain answers lost, a global distance rejects 1%
of out-of-domain images, the class radius 23%).

The class radius (`method: "class_radius"`):

* each reference image's distance to its nearest *other* image of its class, over at most
  `max_per_class` images of each class (a seeded sample: O(classes x cap^2), never N x N);
* a class's radius is the median of these; a class of one image, or one added without
  calibration, takes `default_radius`, the median over all classes; a radius is floored at
  `MIN_RADIUS_SHARE` of that median, so a class of duplicate images does not reject all else;
* `scale` is a quantile of ratios distance / radius of in-domain images that are not part of the
  radius they are divided by: held-out images of the gallery's classes when given (a run's val
  split), else each gallery image against its class's radius recomputed without it. The
  quantile is split-conformal, so that a new in-domain query is rejected with probability at most
  `target_loss`; with fewer than 1 / target_loss ratios it is their largest (exceeded 1 time in
  m + 1);
* a query whose nearest class C (at distance d, its nearest image's) has d > scale x radius(C)
  is "unknown", as is one beyond the global threshold.

Everything is plain JSON in the gallery's metadata (`metadata["rejection"]`, see `calibrate`),
written where galleries are made (`reference_encodings` at train time, `enroll`), so test.py
only reads it (`Gallery.rejection`, `reject`).
"""

import numpy as np

from embedding_net.errors import EncodingsError
from embedding_net.evaluation.distances import distance_matrix
from embedding_net.index.classes import UNKNOWN

METHOD = "class_radius"
TARGET_LOSS = 0.02
MAX_PER_CLASS = 256
MIN_RADIUS_SHARE = 0.25


def leave_one_out_distances(embeddings, labels, distance="euclidean", max_per_class=MAX_PER_CLASS,
                            seed=0):
    """Each sampled image's distance to its nearest other image of its class, and its class's
    radius measured without it.

    Returns:
        `(ids, nearest, radius_without)`: int64 ids into `embeddings` (at most `max_per_class`
        per class, classes of one image left out), float64 distances, and float64 medians of
        the other images' nearest distances once the image is removed (NaN in classes of two),
        all in class order.
    """
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    ids, nearest, without = [], [], []
    for start, count in zip(starts, counts):
        if count < 2:
            continue
        members = order[start : start + count]
        if count > max_per_class:
            members = np.sort(rng.choice(members, max_per_class, replace=False))
        block = distance_matrix(embeddings[members], embeddings[members], distance).astype(np.float64)
        np.fill_diagonal(block, np.inf)
        ids.append(members)
        nearest.append(block.min(axis=1))
        without.append(_radius_without_each(block))
    if not ids:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    return np.concatenate(ids).astype(np.int64), np.concatenate(nearest), np.concatenate(without)


def _radius_without_each(block):
    """For one class's [n, n] distances (inf on the diagonal): per image i, the median over the
    other images j of j's nearest distance once i is gone (its second nearest when i was its
    nearest). Measured this way a gallery image stands to its class as a new query does; with
    i in its own class's median the ratios crowd around 1 and, in small classes, `scale` comes
    out too small (3 classes of 5 drawings: 7% of new drawings rejected for a 2% target)."""
    n = len(block)
    if n < 3:
        return np.full(n, np.nan)
    ranked = np.argsort(block, axis=1)[:, :2]
    first, second = np.take_along_axis(block, ranked, axis=1).T
    others = np.where(ranked[None, :, 0] == np.arange(n)[:, None], second[None, :], first[None, :])
    np.fill_diagonal(others, np.nan)
    return np.nanmedian(others, axis=1)


def calibrate(embeddings, labels, class_names, distance="euclidean", target_loss=TARGET_LOSS,
              max_per_class=MAX_PER_CLASS, seed=0, held_out=None):
    """The class-radius rejection of a gallery, as the JSON dict stored in its metadata.

    Args:
        embeddings: float [N, D] reference embeddings; labels: int [N] ids into `class_names`.
        target_loss: share of in-domain queries to reject: of `held_out` when given, else of
            the gallery's own images, each left out of its class in turn (classes of three
            images or more).
        held_out: None, or `(embeddings [M, D], labels [M])` of other images of the gallery's
            classes, which the model did not train on (a run's val split of the same classes).
            A gallery of training images is tighter than new images of its classes: its own
            leave-one-out distances set `scale` too small (`bench/unknown.py`, photo folder).

    Returns:
        `{"method", "target_loss", "calibrated_on", "scale", "default_radius",
        "radii": {class: radius}, "images"}`, or None when no class has two images.
    """
    if not 0.0 <= target_loss < 1.0:
        raise ValueError(f"`target_loss` must be in [0, 1). Received: {target_loss!r}")
    embeddings, labels = np.asarray(embeddings, np.float32), np.asarray(labels)
    ids, nearest, without = leave_one_out_distances(embeddings, labels, distance, max_per_class, seed)
    if len(ids) == 0:
        return None
    classes, first = np.unique(labels[ids], return_index=True)
    medians = np.array([np.median(part) for part in np.split(nearest, first[1:])])
    default = float(np.median(medians))
    floor = max(MIN_RADIUS_SHARE * default, 1e-12)
    radii = np.maximum(medians, floor)
    measured = np.isfinite(without)
    if measured.any():
        ratios = nearest[measured] / np.maximum(without[measured], floor)
    else:  # classes of two images only: each image's class radius includes it
        ratios = nearest / np.repeat(radii, np.diff(np.r_[first, len(ids)]))
    source = "gallery (leave-one-out)"
    if held_out is not None:
        found = _held_out_ratios(embeddings, labels, held_out, dict(zip(classes, radii)), default, distance)
        if len(found):
            ratios, source = found, f"held-out images ({len(found)})"
    # The split-conformal level: of m exchangeable ratios, the ceil((m + 1)(1 - loss))-th
    # smallest is exceeded by a new one with probability at most `loss`.
    level = min(1.0, (1.0 - target_loss) * (1.0 + 1.0 / len(ratios)))
    return {"method": METHOD, "target_loss": float(target_loss), "calibrated_on": source,
            "scale": float(np.quantile(ratios, level, method="inverted_cdf")),
            "default_radius": default, "images": int(len(ids)),
            "radii": {class_names[c]: float(r) for c, r in zip(classes, radii)}}


def _held_out_ratios(embeddings, labels, held_out, radii, default, distance):
    """Each held-out image's distance to the nearest gallery image of its class, over that
    class's radius; images of classes absent from the gallery are left out."""
    queries, query_labels = np.asarray(held_out[0], np.float32), np.asarray(held_out[1])
    found = []
    for c in np.intersect1d(np.unique(query_labels), np.unique(labels)):
        block = distance_matrix(queries[query_labels == c], embeddings[labels == c], distance)
        found.append(block.min(axis=1) / radii.get(c, max(default, 1e-12)))
    return np.concatenate(found).astype(np.float64) if found else np.zeros(0)


def calibrate_index(index, target_loss=TARGET_LOSS, max_per_class=MAX_PER_CLASS, seed=0):
    """`calibrate` over the live images of an `EmbeddingIndex` (vectors read back by class,
    at most `max_per_class` of each), in its distance."""
    labels = np.asarray(index.labels)
    alive = np.flatnonzero(labels >= 0)
    rng = np.random.default_rng(seed)
    keep = []
    for members in np.split(alive[np.argsort(labels[alive], kind="stable")],
                            np.cumsum(np.bincount(labels[alive]))[:-1]):
        keep.append(np.sort(rng.choice(members, max_per_class, replace=False))
                    if len(members) > max_per_class else members)
    ids = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return calibrate(index.vectors(ids), labels[ids], index.class_names, index.distance,
                     target_loss, max_per_class, seed)


def limits(rejection, names):
    """float64 [len(names)]: the largest distance accepted for each class name."""
    radii, default = rejection["radii"], rejection["default_radius"]
    return rejection["scale"] * np.array([radii.get(name, default) for name in names], np.float64)


def check_rejection(rejection, source="the gallery"):
    """Raises EncodingsError unless `rejection` is a stored calibration this code can apply."""
    method = rejection.get("method") if isinstance(rejection, dict) else rejection
    if method != METHOD:
        raise EncodingsError(f"{source}: unknown rejection method {method!r}; this version knows {METHOD!r}")
    radii = rejection.get("radii")
    values = [rejection.get("scale"), rejection.get("default_radius"),
              *(radii.values() if isinstance(radii, dict) else [None])]
    if not all(isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in values):
        raise EncodingsError(f"{source}: rejection values must be finite numbers >= 0")


def reject(rows, rejection, unknown=UNKNOWN):
    """Marks `unknown` the classified rows (`Gallery.classify`'s dicts) whose nearest class is
    farther than its limit; returns the rows (changed in place)."""
    if not rows:
        return rows
    known = [row["prediction"] != unknown for row in rows]
    nearest = [row["nearest"][0][0] if row["nearest"] else None for row in rows]
    bounds = limits(rejection, nearest)
    for row, ok, bound in zip(rows, known, bounds):
        if ok and row["distance"] > bound:
            row["prediction"] = unknown
    return rows
