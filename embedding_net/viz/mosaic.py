"""Drawing images as one mosaic PNG: framed tiles with captions, and labelled groups of tiles.

A mosaic is one uint8 array drawn with a single `imshow` plus text, so a 256-image batch draws as
fast as a 4-image one. Figures are `matplotlib.figure.Figure` objects on the Agg canvas, never
pyplot, so nothing here touches global state; matplotlib is imported inside the functions so
that importing this module stays cheap. Files are written atomically and their folders created.
"""

import math
import re

import numpy as np

from embedding_net.atomic import atomic_path

GREEN, RED, BLUE = (46, 160, 67), (214, 39, 40), (31, 119, 180)
WHITE, _PANEL_GREY = 255, 236
TILE_INCHES = 1.1  # displayed size of a tile: big enough to see, small enough for wide grids
MAX_PIXELS = 3000  # longest side of a group grid; bigger pictures are drawn smaller
_DPI = 100
_CHARACTER_EMS = 0.62  # average advance of DejaVu Sans, a little generous so lines never overflow
_LINE_SPACING = 1.3


def save_figure(figure, path, dpi=_DPI):
    """Writes a matplotlib figure to `path` as PNG, atomically; returns `path`."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi, facecolor="white")
    return path


def as_rgb_uint8(images, what):
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


def characters_per_line(inches, fontsize):
    """How many characters of `fontsize` points fit on a line `inches` wide."""
    return max(4, int(inches * 72 / (fontsize * _CHARACTER_EMS)))


def line_inches(fontsize):
    return fontsize * _LINE_SPACING / 72


def wrap_name(name, width, max_lines=3):
    """`name` on lines of at most `width` characters, joined by newlines.

    Lines break after `_`, `-`, `/`, `.` or a space where they can (so `Atlantean__character09`
    becomes `Atlantean__` and `character09`) and inside a word only where they must; joining the
    lines gives the name back. A name longer than `max_lines` lines keeps its start and its end
    around an ellipsis, since class names often differ only at one end.
    """
    name, width = str(name), max(2, int(width))
    if len(name) > width * max_lines:
        keep = width * max_lines - 1
        name = name[:keep - keep // 2] + "…" + name[len(name) - keep // 2:]
    lines = [""]
    for piece in re.findall(r"[^_\-/. ]*[_\-/. ]*", name):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        while len(lines[-1]) + len(piece) > width:  # a piece wider than a line: split it
            room = width - len(lines[-1])
            lines[-1] += piece[:room]
            piece = piece[room:]
            lines.append("")
        lines[-1] += piece
    lines = [line for line in lines if line]
    if len(lines) > max_lines:  # separators left lines short: wrap at fixed width instead
        lines = [name[i:i + width] for i in range(0, len(name), width)]
    return "\n".join(lines)


def _figure(mosaic, inch_per_pixel, extra_top_inches=0.0):
    """A figure showing `mosaic` edge to edge, `extra_top_inches` left free above it."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(mosaic.shape[1] * inch_per_pixel,
                             mosaic.shape[0] * inch_per_pixel + extra_top_inches))
    axes = figure.add_axes((0, 0, 1, 1 - extra_top_inches / figure.get_figheight()))
    axes.imshow(mosaic, interpolation="nearest")
    axes.set_axis_off()
    return figure, axes


def draw_mosaic(rows, path, title=None, group=None, fontsize=8):
    """Draws rows of `(image, caption, frame_rgb or None)` tiles as one PNG; returns `path`.

    All images share one shape [H, W, 3]. Captions may have several lines (`\\n`); every row
    leaves room for the longest. `group` adds a gap after every `group` columns, to keep pairs or
    triplets visibly apart when several share a row.
    """
    height, width = rows[0][0][0].shape[:2]
    columns = max(len(row) for row in rows)
    inch_per_pixel = TILE_INCHES / max(height, width)
    border = max(2, max(height, width) // 16)
    lines = max(str(caption).count("\n") + 1 for row in rows for _, caption, _ in row)
    caption_band = int(math.ceil((lines * line_inches(fontsize) + 0.06) / inch_per_pixel))
    gap = border * 2
    cell_w, cell_h = width + 2 * border + gap, height + 2 * border + caption_band
    group_gap = (cell_w // 3) if group else 0

    def left(column):
        return column * cell_w + (column // group) * group_gap if group else column * cell_w

    mosaic = np.full((len(rows) * cell_h, left(columns - 1) + cell_w, 3), WHITE, np.uint8)
    captions = []
    for r, row in enumerate(rows):
        for c, (image, caption, frame) in enumerate(row):
            top, x = r * cell_h, left(c)
            if frame is not None:
                mosaic[top:top + height + 2 * border, x:x + width + 2 * border] = frame
            mosaic[top + border:top + border + height, x + border:x + border + width] = image
            captions.append((x + border + width / 2, top + height + 2 * border + 1, caption))
    title_inches = 0.4 if title else 0.0
    figure, axes = _figure(mosaic, inch_per_pixel, title_inches)
    for x, y, caption in captions:
        axes.text(x, y, caption, ha="center", va="top", fontsize=fontsize, linespacing=_LINE_SPACING)
    if title:
        figure.suptitle(title, fontsize=11, y=1 - 0.05 / figure.get_figheight())
    return save_figure(figure, path)


def _grid_shape(count, block_w, block_h, aspect):
    """Blocks per row that bring `count` blocks of block_w x block_h closest to width/height `aspect`."""
    def error(per_row):
        return abs(math.log(per_row * block_w / (math.ceil(count / per_row) * block_h) / aspect))

    return min(range(1, count + 1), key=error)


def draw_groups(groups, path, columns, groups_per_row=None, fontsize=8, max_lines=3, aspect=4 / 3):
    """Draws `(heading, images)` groups as one PNG, a heading above each block of images.

    Each group's images fill a block `columns` wide; the blocks fill rows of `groups_per_row`
    (by default as many as bring the picture closest to `aspect`, width over height). Headings
    wrap over up to `max_lines` lines of the block's width. All images share one shape [H, W, 3].
    A picture whose longer side would pass `MAX_PIXELS` is drawn smaller, text and all.
    """
    height, width = groups[0][1][0].shape[:2]
    inch_per_pixel = TILE_INCHES / max(height, width)
    pad = max(2, max(height, width) // 16)
    cell_w, cell_h = width + pad, height + pad
    block_rows = max(math.ceil(len(images) / columns) for _, images in groups)
    block_w = columns * cell_w
    wrap = characters_per_line(block_w * inch_per_pixel, fontsize)
    headings = [wrap_name(heading, wrap, max_lines) for heading, _ in groups]
    lines = max(heading.count("\n") + 1 for heading in headings)
    heading_band = int(math.ceil((lines * line_inches(fontsize) + 0.05) / inch_per_pixel))
    gap_w, gap_h = max(cell_w // 3, 2 * pad), max(cell_h // 6, 2 * pad)
    step_w, step_h = block_w + gap_w, heading_band + block_rows * cell_h + gap_h
    per_row = int(groups_per_row or _grid_shape(len(groups), step_w, step_h, aspect))
    if per_row < 1:
        raise ValueError(f"`groups_per_row` must be at least 1. Received: {groups_per_row!r}")
    per_row = min(per_row, len(groups))
    mosaic = np.full((math.ceil(len(groups) / per_row) * step_h, per_row * step_w, 3), WHITE, np.uint8)
    texts = []
    for g, ((_, images), heading) in enumerate(zip(groups, headings)):
        top, left = (g // per_row) * step_h + gap_h // 2, (g % per_row) * step_w + gap_w // 2
        texts.append((left + block_w / 2, top + heading_band - 2, heading))
        # A grey panel per class: it frames images on white backgrounds (Omniglot) and shows
        # where one class ends.
        panel_h = heading_band + math.ceil(len(images) / columns) * cell_h
        mosaic[top:top + panel_h, left:left + block_w] = _PANEL_GREY
        for i, image in enumerate(images):
            y = top + heading_band + (i // columns) * cell_h + pad // 2
            x = left + (i % columns) * cell_w + pad // 2
            mosaic[y:y + height, x:x + width] = image
    shrink = min(1.0, (MAX_PIXELS - 0.5) / (max(mosaic.shape[:2]) * inch_per_pixel * _DPI))  # rounds to <= MAX
    figure, axes = _figure(mosaic, inch_per_pixel * shrink)
    for x, y, heading in texts:
        axes.text(x, y, heading, ha="center", va="bottom", fontsize=fontsize * shrink,
                  linespacing=_LINE_SPACING)
    return save_figure(figure, path)
