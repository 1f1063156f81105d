"""Image galleries as PNG files: retrieved neighbours, training batches, triplets and pairs.

Every gallery is one mosaic (`embedding_net.viz.mosaic`): tiles framed in colour with a caption
under each, or for a batch one block of images per class under the class's name. Class names are
shown whole, wrapped over up to three lines, since names such as `Atlantean__character09` and
`Atlantean__character10` differ only at the end.
"""

import numpy as np

from embedding_net.viz.mosaic import (  # noqa: F401  (save_figure: the viz modules' one writer)
    BLUE, GREEN, RED, TILE_INCHES, as_rgb_uint8, characters_per_line, draw_groups, draw_mosaic,
    save_figure, wrap_name)

_MISSING_GREY = 200
_CAPTION_POINTS = 7  # small enough for a 22-character Omniglot name on two lines under a tile


def nearest_neighbours(query_embeddings, reference_embeddings, k=5, distance="euclidean",
                       exclude_self=False, chunk_size=1024, return_distances=False):
    """Indices of the `k` nearest references of each query, nearest first (ties: lower index).

    Args:
        query_embeddings: [Q, D].
        reference_embeddings: [N, D].
        k: neighbours per query; fewer if there are not that many references.
        distance: `euclidean`, `squared_euclidean` or `cosine`.
        exclude_self: the queries are the references (Q == N); query i never returns itself.
        chunk_size: queries per block, so memory stays O(chunk_size x N).
        return_distances: also return each neighbour's distance to its query.

    Returns:
        int64 [Q, min(k, N)] (N - 1 with `exclude_self`); with `return_distances`, a tuple of it
        and the float32 distances of the same shape.
    """
    from embedding_net.evaluation.distances import distance_matrix  # pulls in keras: only when used

    queries = np.asarray(query_embeddings, np.float32)
    references = np.asarray(reference_embeddings, np.float32)
    if queries.ndim != 2 or references.ndim != 2 or queries.shape[1] != references.shape[1]:
        raise ValueError(f"embeddings must be [Q, D] and [N, D]. Received shapes {queries.shape} "
                         f"and {references.shape}")
    if int(k) < 1:
        raise ValueError(f"`k` must be at least 1. Received: {k!r}")
    if exclude_self and len(queries) != len(references):
        raise ValueError(f"exclude_self needs the queries to be the references. Received "
                         f"{len(queries)} queries and {len(references)} references")
    k = min(int(k), len(references) - int(bool(exclude_self)))
    result = np.zeros((len(queries), max(k, 0)), np.int64)
    distances = np.zeros(result.shape, np.float32)
    for start in range(0, len(queries) if k > 0 else 0, chunk_size):
        block = distance_matrix(queries[start:start + chunk_size], references, distance)
        if exclude_self:
            rows = np.arange(len(block))
            block[rows, start + rows] = np.inf
        candidates = np.arange(len(references))[None, :].repeat(len(block), 0)
        if k < len(references):  # partial selection first: O(N) per query instead of a full sort
            candidates = np.argpartition(block, k - 1, axis=1)[:, :k]
        for row, columns in enumerate(candidates):
            order = np.lexsort((columns, block[row, columns]))
            result[start + row] = columns[order][:k]
            distances[start + row] = block[row, result[start + row]]
    return (result, distances) if return_distances else result


def _read_tiles(paths, image_size):
    """RGB tiles of the unique `paths`; a missing or unreadable file is a grey tile, not an error."""
    from embedding_net.data.images import read_images

    unique = sorted(set(paths))  # a reference retrieved by many queries is read once
    images, failed = read_images(unique, (image_size, image_size), 3)
    lookup = dict(zip(unique, images))
    for failed_path, _ in failed:
        lookup[failed_path][:] = _MISSING_GREY
    return [lookup[p] for p in paths]


def _class_name(label, class_names):
    return str(class_names[label] if class_names is not None else label)


def gallery_caption(name, distance=None, same=None, role=None, width=None):
    """The caption under a gallery tile: `role` (e.g. "query") on its own line, the class name
    whole (wrapped to `width` characters, by default a tile's width of 7-point text), then the
    distance to the query marked ✓ when `same` (same class as the query) and ✗ when not, so the
    frame colours are not the only sign."""
    width = width or characters_per_line(TILE_INCHES * 1.125, _CAPTION_POINTS)
    lines = [role] if role else []
    lines.append(wrap_name(name, width))
    mark = "" if same is None else ("✓ " if same else "✗ ")
    if distance is not None:
        lines.append(f"{mark}d = {float(distance):.3f}")
    elif mark:
        lines.append(mark.strip())
    return "\n".join(lines)


def plot_neighbour_gallery(query_paths, query_labels, reference_paths, reference_labels,
                           neighbour_indices, path="neighbours.png", class_names=None, image_size=64,
                           distances=None):
    """One row per query: the query (blue frame), then its neighbours, green if the same class, red if not.

    Every tile is captioned with its whole class name; a neighbour also with ✓ or ✗ and, given
    `distances`, its distance to the query.

    Args:
        query_paths, query_labels: the Q query images and their classes.
        reference_paths, reference_labels: the N retrievable images and their classes.
        neighbour_indices: [Q, k] indices into the references (e.g. from `nearest_neighbours`).
        path: PNG to write.
        class_names: names for integer labels, or None to show the labels as they are.
        image_size: side of each tile in pixels.
        distances: [Q, k] distance of each neighbour to its query (`nearest_neighbours` with
            `return_distances=True`), or None to leave distances out.

    Returns:
        `path`.
    """
    neighbour_indices = np.asarray(neighbour_indices, np.int64)
    if neighbour_indices.ndim != 2 or not len(query_paths) == len(query_labels) == len(neighbour_indices):
        raise ValueError(f"need one row of neighbour_indices per query. Received {len(query_paths)} paths, "
                         f"{len(query_labels)} labels, neighbour_indices of shape {neighbour_indices.shape}")
    if len(query_paths) == 0:
        raise ValueError("no queries to draw. Received 0 query paths")
    low, high = (neighbour_indices.min(), neighbour_indices.max()) if neighbour_indices.size else (0, 0)
    if low < 0 or high >= len(reference_paths):
        raise ValueError(f"neighbour_indices must lie in [0, {len(reference_paths)}). Received values "
                         f"from {low} to {high}")
    if len(reference_paths) != len(reference_labels):
        raise ValueError(f"reference_paths and reference_labels differ in length. Received "
                         f"{len(reference_paths)} and {len(reference_labels)}")
    if distances is not None and np.shape(distances) != neighbour_indices.shape:
        raise ValueError(f"distances must have the shape of neighbour_indices, {neighbour_indices.shape}. "
                         f"Received shape {np.shape(distances)}")
    wanted = list(query_paths) + [reference_paths[j] for j in neighbour_indices.ravel()]
    tiles = iter(_read_tiles([str(p) for p in wanted], int(image_size)))
    rows = [[(next(tiles), gallery_caption(_class_name(label, class_names), role="query"), BLUE)]
            for label in query_labels]
    for q, (row, label, indices) in enumerate(zip(rows, query_labels, neighbour_indices)):
        for n, j in enumerate(indices):
            same = bool(reference_labels[j] == label)
            caption = gallery_caption(_class_name(reference_labels[j], class_names),
                                      None if distances is None else distances[q][n], same)
            row.append((next(tiles), caption, GREEN if same else RED))
    return draw_mosaic(rows, path, fontsize=_CAPTION_POINTS)


def plot_batch(images, labels, path="batch.png", class_names=None, columns=None, groups_per_row=None):
    """A training batch (images [B, H, W, 1 or 3]) as a grid of classes, each class's images
    together under its whole name.

    Images are grouped by label, classes in order of first appearance, so a P x K batch draws as
    P blocks of K images. The blocks fill rows to make the picture about 4:3 (a 32 x 4 batch:
    4 blocks of 4 images to a row, 8 rows), drawn smaller if its longer side would pass
    `MAX_PIXELS` (3000).

    Args:
        images: uint8 or float images.
        labels: [B] class of each image.
        path: PNG to write.
        class_names: names for integer labels, or None to show the labels as they are.
        columns: images per row inside a class block; by default the largest class's count, up to 8.
        groups_per_row: class blocks per row; by default as many as make the picture about 4:3.

    Returns:
        `path`.
    """
    images = as_rgb_uint8(images, "images")
    labels = np.asarray(labels).ravel()
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need one label per image and at least one image. Received {len(images)} "
                         f"images and {len(labels)} labels")
    classes, first, counts = np.unique(labels, return_index=True, return_counts=True)
    columns = int(columns or min(counts.max(), 8))
    if columns < 1:
        raise ValueError(f"`columns` must be at least 1. Received: {columns!r}")
    groups = [(_class_name(label, class_names), images[labels == label]) for label in classes[np.argsort(first)]]
    return draw_groups(groups, path, columns, groups_per_row)


def _groups(parts, names, frames, captions, per_row, path):
    """Lays out aligned groups (pairs, triplets) `per_row` to a row, each tile captioned."""
    parts = [as_rgb_uint8(part, name) for part, name in zip(parts, names)]
    if len({len(part) for part in parts}) != 1 or len(parts[0]) == 0:
        raise ValueError(f"{', '.join(names)} must be non-empty and equally long. Received "
                         f"{[len(part) for part in parts]}")
    groups = [[(part[i], captions[i][p], frames[i][p]) for p, part in enumerate(parts)]
              for i in range(len(parts[0]))]
    per_row = max(1, int(per_row))
    rows = [sum(groups[i:i + per_row], []) for i in range(0, len(groups), per_row)]
    return draw_mosaic(rows, path, group=len(parts), fontsize=_CAPTION_POINTS)


def plot_triplets(anchors, positives, negatives, path="triplets.png", anchor_labels=None,
                  negative_labels=None, class_names=None, per_row=2):
    """Triplets side by side: anchor (blue), positive (green), negative (red); returns `path`.

    Captions name each role, with its class when `anchor_labels` (the anchor's and positive's
    class) and `negative_labels` are given. `per_row` triplets share a row.
    """
    def named(role, labels, i):
        return role if labels is None else gallery_caption(_class_name(labels[i], class_names), role=role)

    count = len(anchors)
    for name, labels in (("anchor_labels", anchor_labels), ("negative_labels", negative_labels)):
        if labels is not None and len(labels) != count:
            raise ValueError(f"need one of {name} per triplet. Received {len(labels)} for {count} triplets")
    captions = [(named("anchor", anchor_labels, i), named("positive", anchor_labels, i),
                 named("negative", negative_labels, i)) for i in range(count)]
    frames = [(BLUE, GREEN, RED)] * count
    return _groups((anchors, positives, negatives), ("anchors", "positives", "negatives"),
                   frames, captions, per_row, path)


def plot_pairs(first, second, same, path="pairs.png", per_row=4):
    """Pairs side by side, `per_row` to a row; returns `path`.

    A pair whose `same` is 1 is framed green and captioned "same (1)"; one whose `same` is 0 is
    framed red and captioned "different (0)".
    """
    same = [bool(np.asarray(s).ravel()[0]) for s in same]
    if len(same) != len(first):
        raise ValueError(f"need one `same` label per pair. Received {len(same)} labels for "
                         f"{len(first)} pairs")
    captions = [("same (1)", "") if s else ("different (0)", "") for s in same]
    frames = [(GREEN, GREEN) if s else (RED, RED) for s in same]
    return _groups((first, second), ("first", "second"), frames, captions, per_row, path)
