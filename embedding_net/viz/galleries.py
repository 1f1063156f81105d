"""Image galleries as PNG files: retrieved neighbours, training batches, triplets and pairs.

Every gallery is one mosaic array (tiles framed in colour) drawn with a single `imshow` plus a
caption under each tile: one axes however many images, so a 256-image batch draws as fast as a
4-image one. Figures are `matplotlib.figure.Figure` objects on the Agg canvas, never pyplot, so
nothing here touches global state; matplotlib is imported inside the functions so that importing
this module stays cheap. Files are written atomically and their folders created.
"""

import numpy as np

from embedding_net.atomic import atomic_path

GREEN, RED, BLUE = (46, 160, 67), (214, 39, 40), (31, 119, 180)
_WHITE, _MISSING_GREY = 255, 200
_TILE_INCHES = 1.1  # displayed size of a tile: big enough to see, small enough for wide grids


def save_figure(figure, path, dpi=100):
    """Writes a matplotlib figure to `path` as PNG, atomically; returns `path`."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi, facecolor="white")
    return path


def nearest_neighbours(query_embeddings, reference_embeddings, k=5, distance="euclidean",
                       exclude_self=False, chunk_size=1024):
    """Indices of the `k` nearest references of each query, nearest first (ties: lower index).

    Args:
        query_embeddings: [Q, D].
        reference_embeddings: [N, D].
        k: neighbours per query; fewer if there are not that many references.
        distance: `euclidean`, `squared_euclidean` or `cosine`.
        exclude_self: the queries are the references (Q == N); query i never returns itself.
        chunk_size: queries per block, so memory stays O(chunk_size x N).

    Returns:
        int64 [Q, min(k, N)] (N - 1 with `exclude_self`).
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
    return result


def _caption(label, class_names):
    name = class_names[label] if class_names is not None else label
    name = str(name)
    # Longer captions overlap the neighbours; keep both ends, since names often differ only at
    # the end (Latin__character07) or only at the start.
    return name if len(name) <= 16 else name[:7] + "…" + name[-8:]


def _as_rgb_uint8(images, what):
    """uint8 [B, H, W, 3] from uint8/float images with 1 or 3 channels (floats in [0,1] or [0,255])."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"{what} must be images [B, H, W, 1 or 3]. Received shape {images.shape}")
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
        scale = 255.0 if images.size and images.max() <= 1.0 else 1.0
        images = np.clip(images * scale, 0, 255).astype(np.uint8)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def _read_tiles(paths, image_size):
    """RGB tiles of the unique `paths`; a missing or unreadable file is a grey tile, not an error."""
    from embedding_net.data.images import read_images

    unique = sorted(set(paths))  # a reference retrieved by many queries is read once
    images, failed = read_images(unique, (image_size, image_size), 3)
    lookup = dict(zip(unique, images))
    for failed_path, _ in failed:
        lookup[failed_path][:] = _MISSING_GREY
    return [lookup[p] for p in paths]


def draw_mosaic(rows, path, title=None, group=None):
    """Draws rows of `(image, caption, frame_rgb or None)` tiles as one PNG; returns `path`.

    All images share one shape [H, W, 3]. `group` adds a gap after every `group` columns, to
    keep pairs or triplets visibly apart when several share a row.
    """
    from matplotlib.figure import Figure

    height, width = rows[0][0][0].shape[:2]
    columns = max(len(row) for row in rows)
    inch_per_pixel = _TILE_INCHES / max(height, width)
    border = max(2, max(height, width) // 16)
    caption_band = int(round(0.22 / inch_per_pixel))  # one 8-point line of text
    gap = border * 2
    cell_w, cell_h = width + 2 * border + gap, height + 2 * border + caption_band
    group_gap = (cell_w // 3) if group else 0

    def left(column):
        return column * cell_w + (column // group) * group_gap if group else column * cell_w

    mosaic = np.full((len(rows) * cell_h, left(columns - 1) + cell_w, 3), _WHITE, np.uint8)
    captions = []
    for r, row in enumerate(rows):
        for c, (image, caption, frame) in enumerate(row):
            top, x = r * cell_h, left(c)
            if frame is not None:
                mosaic[top:top + height + 2 * border, x:x + width + 2 * border] = frame
            mosaic[top + border:top + border + height, x + border:x + border + width] = image
            captions.append((x + border + width / 2, top + height + 2 * border + 1, caption))
    title_inches = 0.4 if title else 0.0
    figure = Figure(figsize=(mosaic.shape[1] * inch_per_pixel,
                             mosaic.shape[0] * inch_per_pixel + title_inches))
    axes = figure.add_axes((0, 0, 1, 1 - title_inches / figure.get_figheight()))
    axes.imshow(mosaic, interpolation="nearest")
    axes.set_axis_off()
    for x, y, caption in captions:
        axes.text(x, y, caption, ha="center", va="top", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=11, y=1 - 0.05 / figure.get_figheight())
    return save_figure(figure, path)


def plot_neighbour_gallery(query_paths, query_labels, reference_paths, reference_labels,
                           neighbour_indices, path="neighbours.png", class_names=None, image_size=64):
    """One row per query: the query (blue frame), then its neighbours, green if the same class, red if not.

    Args:
        query_paths, query_labels: the Q query images and their classes.
        reference_paths, reference_labels: the N retrievable images and their classes.
        neighbour_indices: [Q, k] indices into the references (e.g. from `nearest_neighbours`).
        path: PNG to write.
        class_names: names for integer labels, or None to show the labels as they are.
        image_size: side of each tile in pixels.

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
    wanted = list(query_paths) + [reference_paths[j] for j in neighbour_indices.ravel()]
    tiles = iter(_read_tiles([str(p) for p in wanted], int(image_size)))
    rows = [[(next(tiles), "query: " + _caption(label, class_names), BLUE)] for label in query_labels]
    for row, label, indices in zip(rows, query_labels, neighbour_indices):
        for j in indices:
            same = reference_labels[j] == label
            row.append((next(tiles), _caption(reference_labels[j], class_names), GREEN if same else RED))
    return draw_mosaic(rows, path)


def plot_batch(images, labels, path="batch.png", class_names=None, columns=None):
    """A grid of a training batch (uint8 [B, H, W, 1 or 3]) with each image's label under it."""
    images = _as_rgb_uint8(images, "images")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need one label per image and at least one image. Received {len(images)} "
                         f"images and {len(labels)} labels")
    columns = int(columns or np.ceil(np.sqrt(len(images))))
    if columns < 1:
        raise ValueError(f"`columns` must be at least 1. Received: {columns!r}")
    tiles = [(image, _caption(label, class_names), None) for image, label in zip(images, labels)]
    return draw_mosaic([tiles[i:i + columns] for i in range(0, len(tiles), columns)], path)


def _groups(parts, names, frames, captions, per_row, path):
    """Lays out aligned groups (pairs, triplets) `per_row` to a row, each tile captioned."""
    parts = [_as_rgb_uint8(part, name) for part, name in zip(parts, names)]
    if len({len(part) for part in parts}) != 1 or len(parts[0]) == 0:
        raise ValueError(f"{', '.join(names)} must be non-empty and equally long. Received "
                         f"{[len(part) for part in parts]}")
    groups = [[(part[i], captions[i][p], frames[i][p]) for p, part in enumerate(parts)]
              for i in range(len(parts[0]))]
    per_row = max(1, int(per_row))
    rows = [sum(groups[i:i + per_row], []) for i in range(0, len(groups), per_row)]
    return draw_mosaic(rows, path, group=len(parts))


def plot_triplets(anchors, positives, negatives, path="triplets.png", anchor_labels=None,
                  negative_labels=None, class_names=None, per_row=2):
    """Triplets side by side: anchor (blue), positive (green), negative (red); returns `path`.

    Captions name each role, with its class when `anchor_labels` (the anchor's and positive's
    class) and `negative_labels` are given. `per_row` triplets share a row.
    """
    def named(role, labels, i):
        return role if labels is None else f"{role}: {_caption(labels[i], class_names)}"

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
