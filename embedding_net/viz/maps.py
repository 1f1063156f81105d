"""Maps of embeddings: t-SNE (PNG and interactive HTML).

Training curves are in `embedding_net.viz.curves`, image galleries (neighbours, batches,
triplets, pairs) in `embedding_net.viz.galleries`. matplotlib,
plotly and scikit-learn are imported inside the functions, so importing this module is cheap;
PNGs are drawn on `matplotlib.figure.Figure` (Agg, no pyplot global state), HTML with plotly
(plotly.js inline, so the file works offline). Every file is written atomically.
"""

import base64
import os

import numpy as np

from embedding_net.atomic import atomic_write_text
from embedding_net.viz.galleries import save_figure

LEGEND_CLASSES = 20  # beyond this a legend is unreadable: the rest are summarised as "+N more"
_INTERACTIVE_TRACES = 40  # one toggleable trace per class up to this; one coloured trace beyond
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # filled: cycled when the 20 colours run out


def tsne_2d(embeddings, max_points=2000, seed=0, perplexity=30.0, pca_dims=50):
    """A 2-D t-SNE layout of at most `max_points` embeddings.

    The subsample is uniform without replacement (seeded), so classes keep their proportions
    on average; small classes may drop out when there are many. Embeddings wider than
    `pca_dims` go through PCA first, which is the usual way to speed t-SNE up and denoise it.

    Args:
        embeddings: [N, D].
        max_points: the most points to lay out (t-SNE is quadratic-ish in them).
        seed: seeds the subsample, PCA and t-SNE: the same seed gives the same layout.
        perplexity: t-SNE perplexity, lowered to (M - 1) / 3 for small M.
        pca_dims: PCA dimensions before t-SNE when D is larger.

    Returns:
        `(points, indices)`: float32 [M, 2] and the int64 [M] rows of `embeddings` they show,
        ascending.
    """
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [N, D]. Received shape {embeddings.shape}")
    if int(max_points) < 1 or float(perplexity) <= 0 or int(pca_dims) < 2:
        raise ValueError(f"need max_points >= 1, perplexity > 0 and pca_dims >= 2. Received "
                         f"max_points={max_points!r}, perplexity={perplexity!r}, pca_dims={pca_dims!r}")
    indices = np.arange(len(embeddings), dtype=np.int64)
    if len(indices) > max_points:
        indices = np.sort(np.random.default_rng(seed).choice(indices, int(max_points), replace=False))
    data = embeddings[indices]
    if len(data) < 2:  # nothing to arrange; t-SNE refuses a single point
        return np.zeros((len(data), 2), np.float32), indices
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    if data.shape[1] > pca_dims:
        data = PCA(min(int(pca_dims), len(data)), random_state=seed).fit_transform(data)
    if data.shape[1] < 2:  # the PCA initialisation of t-SNE needs two input dimensions
        data = np.pad(data, ((0, 0), (0, 2 - data.shape[1])))
    tsne = TSNE(2, init="pca", random_state=seed, perplexity=min(float(perplexity), (len(data) - 1) / 3))
    # One thread: inside a training process scikit-learn's OpenMP threads contend with
    # TensorFlow's, and the default job's two maps of 800 points took 68 s instead of about 5.
    with threadpool_limits(limits=1):
        return tsne.fit_transform(data).astype(np.float32), indices


def _inputs(embeddings_or_path, labels, class_names, paths=None):
    """(embeddings, labels, class_names, paths), from an encodings file when given a path."""
    if isinstance(embeddings_or_path, (str, os.PathLike)):
        from embedding_net.inference.encodings import load_encodings

        encodings = load_encodings(os.fspath(embeddings_or_path))
        embeddings = encodings.embeddings
        labels = encodings.labels if labels is None else labels
        class_names = encodings.class_names if class_names is None else class_names
        paths = encodings.paths if paths is None else paths
    else:
        embeddings = np.asarray(embeddings_or_path, np.float32)
    for name, values in (("labels", labels), ("paths", paths)):
        if values is not None and len(values) != len(embeddings):
            raise ValueError(f"need one of {name} per embedding. Received {len(values)} {name} "
                             f"for {len(embeddings)} embeddings")
    return embeddings, None if labels is None else np.asarray(labels), class_names, paths


def _map(embeddings, points, max_points, seed):
    """The given t-SNE map of every embedding, or a new one of a subsample."""
    if points is None:
        return tsne_2d(embeddings, max_points, seed)
    points = np.asarray(points, np.float32)
    if points.shape != (len(embeddings), 2):
        raise ValueError(f"`points` must be [{len(embeddings)}, 2]. Received shape: {points.shape}")
    return points, np.arange(len(points))


def _class_styles(labels):
    """Per class (in `np.unique` order of all labels, so a subsample keeps its colours): colour, marker."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    classes = np.unique(labels)
    return classes, [(palette[i % 20], _MARKERS[(i // 20) % len(_MARKERS)]) for i in range(len(classes))]


def _name(label, class_names):
    return str(class_names[label]) if class_names is not None else str(label)


def plot_tsne(embeddings_or_path, labels=None, class_names=None, path="tsne.png", title=None,
              max_points=2000, seed=0, points=None):
    """A static t-SNE map, one colour/marker per class, as PNG; returns `path`.

    The legend lists the `LEGEND_CLASSES` classes with the most plotted points, then
    "+N more classes", so it stays readable with hundreds of classes.

    Args:
        embeddings_or_path: [N, D] embeddings, or the path of an encodings file (whose labels
            and class names are used unless `labels` / `class_names` are given).
        labels: [N] class of each embedding, or None for one colour.
        class_names: names for integer labels, or None to show the labels as they are.
        path: PNG to write.
        title: figure title; by default how many points are shown.
        max_points, seed: see `tsne_2d`.
        points: [N, 2] map of all the embeddings already computed with `tsne_2d`, so that the
            PNG and the HTML can share one t-SNE; None to compute it here.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    embeddings, labels, class_names, _ = _inputs(embeddings_or_path, labels, class_names)
    points, indices = _map(embeddings, points, max_points, seed)
    figure = Figure(figsize=(10, 8), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title or f"t-SNE of {len(indices)} of {len(embeddings)} embeddings")
    axes.set_xticks([])
    axes.set_yticks([])
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=10, linewidths=0)
        return save_figure(figure, path)
    classes, styles = _class_styles(labels)
    shown = np.searchsorted(classes, labels[indices])  # style index of each plotted point
    for marker in _MARKERS:  # one scatter per marker, not per class: fast with thousands of classes
        mask = np.array([styles[s][1] == marker for s in shown], bool)
        if mask.any():
            colours = [styles[s][0] for s in shown[mask]]
            axes.scatter(points[mask, 0], points[mask, 1], c=colours, marker=marker, s=14, linewidths=0)
    counts = np.bincount(shown, minlength=len(classes))
    largest = [s for s in np.argsort(-counts, kind="stable")[:LEGEND_CLASSES] if counts[s]]
    handles = [Line2D([], [], linestyle="", marker=styles[s][1], color=styles[s][0],
                      label=f"{_name(classes[s], class_names)} ({counts[s]})") for s in largest]
    hidden = int(np.count_nonzero(counts)) - len(largest)
    if hidden:
        handles.append(Line2D([], [], linestyle="", label=f"+{hidden} more classes"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    return save_figure(figure, path)


# Shows the hovered point's thumbnail (customdata[2], a data URI) in a fixed corner box.
_HOVER_SCRIPT = """
var graph = document.getElementById('{plot_id}');
var box = document.createElement('div');
box.id = 'embedding-net-thumbnail';
box.style.cssText = 'position:fixed;top:12px;right:12px;padding:4px;background:#fff;' +
    'border:1px solid #888;box-shadow:0 2px 6px rgba(0,0,0,.3);display:none;z-index:1000';
var image = document.createElement('img');
image.style.cssText = 'width:128px;height:128px;image-rendering:pixelated;display:block';
box.appendChild(image);
document.body.appendChild(box);
graph.on('plotly_hover', function (event) {
    var uri = event.points[0].customdata && event.points[0].customdata[2];
    if (uri) { image.src = uri; box.style.display = 'block'; } else { box.style.display = 'none'; }
});
graph.on('plotly_unhover', function () { box.style.display = 'none'; });
"""


def _thumbnail_uris(paths, size):
    """PNG data URIs of the images, "" for a missing or unreadable one (never an error)."""
    import cv2

    from embedding_net.data.images import read_images

    images, failed = read_images(paths, (size, size), 3)
    unreadable = {p for p, _ in failed}
    uris = []
    for image_path, image in zip(paths, images):
        ok, png = (False, None) if image_path in unreadable else cv2.imencode(
            ".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))  # read_images gives RGB, OpenCV writes BGR
        uris.append("data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii") if ok else "")
    return uris


def plot_tsne_interactive(embeddings_or_path, labels=None, class_names=None, paths=None, path="tsne.html",
                          thumbnails=True, thumbnail_size=48, max_points=2000, seed=0, title=None,
                          points=None):
    """An interactive t-SNE map as a self-contained HTML file; returns `path`.

    Hovering a point shows its class and file name, and (with `thumbnails`) the image itself in
    the top-right corner. Thumbnails are embedded as PNG data URIs, about 2-4 KB each at 48 px.
    Up to 40 classes each get a trace that the legend can toggle; beyond that one trace is
    coloured by class.

    Args:
        embeddings_or_path, labels, class_names: as in `plot_tsne`.
        paths: [N] image files, for file names and thumbnails; taken from an encodings file.
        path: HTML to write.
        thumbnails: embed thumbnails of the plotted images.
        thumbnail_size: thumbnail side in pixels.
        max_points, seed: see `tsne_2d`.
        title: page title; by default how many points are shown.
        points: as in `plot_tsne`.
    """
    import plotly.graph_objects as go

    embeddings, labels, class_names, paths = _inputs(embeddings_or_path, labels, class_names, paths)
    points, indices = _map(embeddings, points, max_points, seed)
    names = [_name(labels[i], class_names) for i in indices] if labels is not None else [""] * len(indices)
    shown_paths = [str(paths[i]) for i in indices] if paths is not None else [""] * len(indices)
    files = [os.path.basename(p) for p in shown_paths]
    uris = [""] * len(indices)
    if thumbnails and paths is not None:
        uris = _thumbnail_uris(shown_paths, int(thumbnail_size))
    customdata = np.array(list(zip(names, files, uris)), dtype=object).reshape(len(indices), 3)
    common = dict(mode="markers", hovertemplate="<b>%{customdata[0]}</b><br>%{customdata[1]}<extra></extra>")
    figure = go.Figure()
    classes = np.unique(labels) if labels is not None else []
    if labels is not None and len(classes) <= _INTERACTIVE_TRACES:
        for label in classes:
            mask = labels[indices] == label
            figure.add_trace(go.Scatter(x=points[mask, 0], y=points[mask, 1], customdata=customdata[mask],
                                        name=_name(label, class_names), **common))
    else:
        colour = np.searchsorted(classes, labels[indices]) if labels is not None else None
        figure.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], customdata=customdata, showlegend=False,
                                    marker=dict(color=colour, colorscale="Turbo"), **common))
    figure.update_layout(title=title or f"t-SNE of {len(indices)} of {len(embeddings)} embeddings",
                         template="plotly_white", hovermode="closest",
                         xaxis=dict(showticklabels=False), yaxis=dict(showticklabels=False))
    html = figure.to_html(include_plotlyjs=True, full_html=True, post_script=_HOVER_SCRIPT)
    atomic_write_text(path, html)
    return path
