"""The pictures of TensorBoard's embedding projector (no TensorFlow): a seeded sample of points
stratified by class, and the sprite, one thumbnail per point in a grid PNG.

The projector draws point i with the tile at row i // columns, column i % columns of the sprite,
where columns = sprite width // tile width; it refuses sprites over 8192 pixels a side.
"""

import cv2
import numpy as np

from embedding_net.atomic import atomic_path

MAX_SPRITE_SIDE = 8192  # the projector's limit (WebGL textures)


def stratified_subsample(labels, max_points, seed=0):
    """Sorted indices of at most `max_points` points, each class keeping its share of them
    (within one point), drawn at random (seeded) inside each class.

    Every point gets the key (its random rank in its class + 1/2) / the size of its class; the
    `max_points` smallest keys then hold about `max_points * size / total` points of each class,
    where a plain random sample can leave out a small class altogether.
    """
    labels = np.asarray(labels)
    if len(labels) <= max_points:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    shuffled = labels[order]
    by_class = np.argsort(shuffled, kind="stable")  # random order inside each class
    _, starts, sizes = np.unique(shuffled[by_class], return_index=True, return_counts=True)
    rank, size = np.empty(len(labels)), np.empty(len(labels))
    rank[by_class] = np.arange(len(labels)) - np.repeat(starts, sizes)
    size[by_class] = np.repeat(sizes, sizes)
    keys = (rank + 0.5) / size
    # Ties between classes of one size fall to the random order of `order`, not to the label.
    chosen = order[np.argsort(keys, kind="stable")[:max_points]]
    return np.sort(chosen)


def sprite_tile(count, height, width, max_tile=64, max_side=MAX_SPRITE_SIDE):
    """`(tile_height, tile_width)` of `count` images of `height` x `width` in a sprite: their
    aspect ratio kept, at most `max_tile` pixels a side and the near-square grid at most
    `max_side`; never enlarged (so tiles of that size keep it)."""
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    scale = min(1.0, max_tile / max(height, width), max_side / (columns * width), max_side / (rows * height))
    return max(1, int(height * scale)), max(1, int(width * scale))


def thumbnail(image, tile):
    """uint8 [H, W, C] shrunk to `tile` = (height, width) with area interpolation."""
    if image.shape[:2] == tuple(tile):
        return image
    return cv2.resize(image, (tile[1], tile[0]), interpolation=cv2.INTER_AREA).reshape(*tile, image.shape[-1])


def sprite_image(images, max_tile=64, max_side=MAX_SPRITE_SIDE):
    """The sprite of uint8 images [N, H, W, C] (C: 1 or 3), row-major in a near-square grid of
    `sprite_tile` tiles; empty cells after the last image are white.

    Returns:
        `(sprite, (tile_height, tile_width))`, the sprite uint8 [rows * th, columns * tw, C].
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N > 0, H, W, 1 or 3]. Received {images.dtype} {images.shape}")
    count, height, width, channels = images.shape
    tile_height, tile_width = sprite_tile(count, height, width, max_tile, max_side)
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    if rows * tile_height > max_side or columns * tile_width > max_side:
        raise ValueError(f"{count} images do not fit a {max_side} x {max_side} sprite even 1 pixel a side")
    sprite = np.full((rows * tile_height, columns * tile_width, channels), 255, np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        sprite[row * tile_height:(row + 1) * tile_height, column * tile_width:(column + 1) * tile_width] = \
            thumbnail(image, (tile_height, tile_width))
    return sprite, (tile_height, tile_width)


def save_png(path, image):
    """Writes uint8 [H, W, 1 or 3] (RGB) as a PNG, atomically."""
    image = image[:, :, 0] if image.shape[-1] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as PNG")
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(encoded.tobytes())
