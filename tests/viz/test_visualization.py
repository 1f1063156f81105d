"""Visualisation: t-SNE maps (PNG, HTML), training curves, neighbour galleries, batches, pairs.

t-SNE runs for real on a few tiny inputs; the plotting tests swap in a cheap stand-in layout so
the file stays fast on two cores.
"""

import base64
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from embedding_net.viz import galleries
from embedding_net.viz import curves
from embedding_net.viz import maps as visualization
from embedding_net.inference.encodings import make_encodings, save_encodings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """Checks `path` is a PNG OpenCV decodes, with no temporary file left beside it; returns it."""
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    assert [n for n in os.listdir(os.path.dirname(path)) if ".tmp" in n] == []
    image = cv2.imread(str(path))
    assert image is not None
    return image


@pytest.fixture
def fast_tsne(monkeypatch):
    """A stand-in for `tsne_2d` keeping its subsampling contract: the first two dimensions."""
    def layout(embeddings, max_points=2000, seed=0, perplexity=30.0, pca_dims=50):
        indices = np.arange(min(len(embeddings), max_points))
        return np.asarray(embeddings, np.float32)[indices, :2], indices

    monkeypatch.setattr(visualization, "tsne_2d", layout)


@pytest.fixture
def captured(monkeypatch):
    """Records the figures passed to `save_figure` (still writing them)."""
    figures = []

    def save(figure, path, dpi=100):
        figures.append(figure)
        return galleries.save_figure(figure, path, dpi)

    for module in (visualization, curves):  # every module that saves figures through it
        monkeypatch.setattr(module, "save_figure", save)
    return figures


@pytest.fixture
def image_files(tmp_path):
    """Six small images of three classes on disk; returns (paths, labels)."""
    paths, labels = [], []
    for i in range(6):
        path = tmp_path / "images" / f"class{i % 3}" / f"bild_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((20, 30, 3), 40 * i, np.uint8))
        paths.append(str(path))
        labels.append(i % 3)
    return paths, np.array(labels)


def clustered(n, classes, dims, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    return rng.normal(size=(classes, dims))[labels] * 5 + rng.normal(size=(n, dims)), labels


def test_import_is_light():
    code = ("import sys, embedding_net.viz.maps; "
            "print([m for m in ('matplotlib', 'plotly', 'sklearn', 'keras') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_tsne_is_seeded_subsampled_and_indexes_the_input():
    embeddings, _ = clustered(60, 3, 8)  # 8 > pca_dims: the PCA step runs too
    points, indices = visualization.tsne_2d(embeddings, max_points=40, seed=3, perplexity=5, pca_dims=4)
    again, same_indices = visualization.tsne_2d(embeddings, max_points=40, seed=3, perplexity=5, pca_dims=4)
    assert points.shape == (40, 2) and points.dtype == np.float32 and np.isfinite(points).all()
    np.testing.assert_array_equal(indices, same_indices)
    np.testing.assert_allclose(points, again)
    assert len(np.unique(indices)) == 40 and np.all(np.diff(indices) > 0) and indices.max() < 60


def test_tsne_small_and_invalid_inputs():
    points, indices = visualization.tsne_2d(np.ones((1, 4)))
    assert points.shape == (1, 2) and list(indices) == [0]
    points, indices = visualization.tsne_2d(np.random.default_rng(0).normal(size=(3, 1)))  # perplexity lowered
    assert points.shape == (3, 2) and list(indices) == [0, 1, 2]
    with pytest.raises(ValueError, match=r"\(5,\)"):
        visualization.tsne_2d(np.zeros(5))
    with pytest.raises(ValueError, match="max_points=0"):
        visualization.tsne_2d(np.zeros((5, 2)), max_points=0)


def test_plot_tsne_from_an_encodings_file(tmp_path, image_files):
    paths, _ = image_files
    embeddings, labels = clustered(60, 3, 8)
    encodings_path = str(tmp_path / "encodings.npz")
    save_encodings(encodings_path, make_encodings(embeddings, labels, ["äpfel", "b", "c"],
                                                  [paths[i % 6] for i in range(60)]))
    out = str(tmp_path / "new" / "folder" / "tsne.png")
    assert visualization.plot_tsne(encodings_path, path=out, max_points=30) == out
    assert read_png(out).shape == (800, 1000, 3)


def test_plot_tsne_legend_stays_short_with_many_classes(tmp_path, fast_tsne, captured):
    embeddings, labels = clustered(300, 100, 4)
    labels[:50] = 7  # the largest class comes first in the legend
    out = visualization.plot_tsne(embeddings, labels, [f"class {i}" for i in range(100)],
                                  path=str(tmp_path / "many.png"), title="many")
    read_png(out)
    texts = [t.get_text() for t in captured[0].axes[0].get_legend().get_texts()]
    assert len(texts) == visualization.LEGEND_CLASSES + 1
    assert texts[0].startswith("class 7 (") and texts[-1] == "+80 more classes"


def test_plot_tsne_without_labels(tmp_path, fast_tsne):
    read_png(visualization.plot_tsne(np.random.default_rng(0).normal(size=(30, 3)), path=str(tmp_path / "t.png")))


def figure_script(html):
    """The figure's own script (data, layout, hover hook) after the inline plotly.js, unescaped."""
    script = html.rsplit("Plotly.newPlot(", 1)[1]
    return script.replace("\\u002f", "/").replace("\\/", "/")  # plotly's JSON escapes slashes


def test_interactive_tsne_has_hover_thumbnails(tmp_path, image_files, fast_tsne):
    paths, labels = image_files
    paths = paths[:5] + [str(tmp_path / "missing.png")]  # an unreadable image: no thumbnail, no error
    embeddings, _ = clustered(6, 3, 4)
    out = visualization.plot_tsne_interactive(embeddings, labels, ["a", "b", "c"], paths,
                                              path=str(tmp_path / "html" / "tsne.html"), thumbnail_size=24)
    html = open(out, encoding="utf-8").read()
    assert "plotly" in html and "embedding-net-thumbnail" in html
    figure = figure_script(html)
    assert "plotly_hover" in figure and "bild_0.png" in figure and "missing.png" in figure
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", figure)
    assert len(uris) == 5
    thumbnail = cv2.imdecode(np.frombuffer(base64.b64decode(uris[0]), np.uint8), cv2.IMREAD_COLOR)
    assert thumbnail.shape == (24, 24, 3)


def test_interactive_tsne_many_classes_and_encodings_file(tmp_path, image_files, fast_tsne):
    paths, _ = image_files
    embeddings, labels = clustered(90, 45, 4)  # above the per-class trace limit: one coloured trace
    encodings_path = str(tmp_path / "enc.npz")
    save_encodings(encodings_path, make_encodings(embeddings, labels, [f"c{i}" for i in range(45)],
                                                  [paths[i % 6] for i in range(90)]))
    out = visualization.plot_tsne_interactive(encodings_path, path=str(tmp_path / "t.html"),
                                              thumbnails=False, max_points=90)
    figure = figure_script(open(out, encoding="utf-8").read())
    shown = set(re.findall(r'\["c(\d+)"', figure))  # class names in the hover data
    assert shown == {str(i) for i in range(45)} and "data:image/png;base64" not in figure


def write_csv(path, header, rows):
    path.write_text("\n".join([",".join(header)] + [",".join(map(str, r)) for r in rows]) + "\n")
    return str(path)


def test_training_curves_plot_only_present_columns(tmp_path, captured):
    full = ["epoch", "active_triplets", "learning_rate", "loss", "negative_distance", "positive_distance",
            "val_active_triplets", "val_loss", "val_negative_distance", "val_positive_distance"]
    rows = [[e, 0.5 / (e + 1), 1e-3 * 0.1 ** e, 1.0 / (e + 1), 1.2, 0.4, "NA", 1.1 / (e + 1), 1.1, 0.5]
            for e in range(4)]
    read_png(curves.plot_training_curves(write_csv(tmp_path / "full.csv", full, rows),
                                                path=str(tmp_path / "full.png")))
    assert [a.get_title() for a in captured[0].axes] == [
        "loss", "learning rate", "positive distance", "negative distance", "active triplets"]
    assert captured[0].axes[1].get_yscale() == "log"
    read_png(curves.plot_training_curves(write_csv(tmp_path / "loss.csv", ["epoch", "loss"], [[0, 1.0], [1, 0.5]]),
                                                path=str(tmp_path / "loss.png")))
    read_png(curves.plot_training_curves({"loss": [1.0, 0.7], "val_loss": [1.2, 0.9], "lr": [0.1, 0.1]},
                                                path=str(tmp_path / "dict.png")))
    assert [a.get_title() for a in captured[1].axes] == ["loss"]
    assert [a.get_title() for a in captured[2].axes] == ["loss", "learning rate"]
    with pytest.raises(ValueError, match="accuracy"):
        curves.plot_training_curves({"accuracy": [0.5]}, path=str(tmp_path / "none.png"))


def brute_force(queries, references, distance):
    if distance == "cosine":
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        references = references / np.linalg.norm(references, axis=1, keepdims=True)
        return 1 - queries @ references.T
    return np.linalg.norm(queries[:, None] - references[None], axis=2)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_nearest_neighbours_match_brute_force(distance):
    rng = np.random.default_rng(1)
    queries, references = rng.normal(size=(23, 6)), rng.normal(size=(40, 6))
    found = galleries.nearest_neighbours(queries, references, k=5, distance=distance, chunk_size=7)
    np.testing.assert_array_equal(found, np.argsort(brute_force(queries, references, distance), axis=1)[:, :5])
    everything = galleries.nearest_neighbours(queries, references, k=100, distance=distance)
    assert everything.shape == (23, 40)


def test_nearest_neighbours_exclude_self():
    references = np.random.default_rng(2).normal(size=(30, 4))
    found = galleries.nearest_neighbours(references, references, k=3, exclude_self=True, chunk_size=8)
    expected = brute_force(references, references, "euclidean")
    np.fill_diagonal(expected, np.inf)
    np.testing.assert_array_equal(found, np.argsort(expected, axis=1)[:, :3])
    assert galleries.nearest_neighbours(references, references, k=1)[:, 0].tolist() == list(range(30))
    assert galleries.nearest_neighbours(references[:4], references[:4], k=9, exclude_self=True).shape == (4, 3)
    with pytest.raises(ValueError, match="3 queries and 30 references"):
        galleries.nearest_neighbours(references[:3], references, exclude_self=True)
    with pytest.raises(ValueError, match="0"):
        galleries.nearest_neighbours(references, references, k=0)


def test_neighbour_gallery_frames_hits_and_misses(tmp_path, image_files):
    paths, labels = image_files
    references = paths[1:] + [str(tmp_path / "gone.png")]  # a missing image becomes a grey tile
    reference_labels = list(labels[1:]) + [0]
    neighbours = [[2, 0, 5], [3, 4, 1]]
    out = galleries.plot_neighbour_gallery(paths[:2], labels[:2], references, reference_labels, neighbours,
                                               path=str(tmp_path / "g" / "n.png"), class_names=["a", "b", "c"])
    image = cv2.cvtColor(read_png(out), cv2.COLOR_BGR2RGB).reshape(-1, 3).astype(int)
    height, width = read_png(out).shape[:2]
    assert 1.5 * height < width < 3 * height  # 2 rows of 4 tiles with captions
    for colour in (galleries.GREEN, galleries.RED, galleries.BLUE):
        assert (np.abs(image - colour).sum(axis=1) < 10).any(), colour
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        galleries.plot_neighbour_gallery(paths[:1], labels[:1], references, reference_labels, [[6]],
                                             path=str(tmp_path / "bad.png"))


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_batch(tmp_path, channels):
    images = np.random.default_rng(0).integers(0, 255, (10, 16, 12, channels), dtype=np.uint8)
    out = galleries.plot_batch(images, np.arange(10) % 4, path=str(tmp_path / "b.png"),
                                   class_names=["α", "b", "c", "d"])
    height, width = read_png(out).shape[:2]
    assert 0.8 < width / height < 2  # 4 class blocks of 2 or 3 images
    tall = galleries.plot_batch(images[:4], [0, 1, 2, 3], path=str(tmp_path / "c.png"), groups_per_row=1)
    assert read_png(tall).shape[0] > 2 * read_png(tall).shape[1]
    with pytest.raises(ValueError, match=r"\(10, 16\)"):
        galleries.plot_batch(np.zeros((10, 16)), np.arange(10), path=str(tmp_path / "x.png"))


def test_plot_triplets_and_pairs(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 5, 20, 20, 1), dtype=np.uint8)
    out = galleries.plot_triplets(*images, path=str(tmp_path / "t.png"), anchor_labels=[0, 1, 2, 0, 1],
                                      negative_labels=[1, 2, 0, 1, 2], class_names=["x", "y", "z"])
    read_png(out)
    out = galleries.plot_pairs(images[0], images[1].astype(np.float32) / 255, [1, 0, 1, 1, 0],
                                   path=str(tmp_path / "p.png"))
    image = cv2.cvtColor(read_png(out), cv2.COLOR_BGR2RGB).reshape(-1, 3).astype(int)
    for colour in (galleries.GREEN, galleries.RED):
        assert (np.abs(image - colour).sum(axis=1) < 10).any(), colour
    with pytest.raises(ValueError, match="2 for 5 triplets"):
        galleries.plot_triplets(*images, path=str(tmp_path / "u.png"), anchor_labels=[0, 1])
    with pytest.raises(ValueError, match=r"\[5, 4\]"):
        galleries.plot_pairs(images[0], images[1][:4], [1, 0, 1, 1, 0], path=str(tmp_path / "q.png"))


def test_precomputed_points_are_drawn_as_given(tmp_path):
    from embedding_net.viz.maps import plot_tsne, plot_tsne_interactive

    embeddings = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    points = np.arange(12, dtype=np.float32).reshape(6, 2)
    png = plot_tsne(embeddings, np.array([0, 0, 1, 1, 2, 2]), path=str(tmp_path / "t.png"), points=points)
    html = plot_tsne_interactive(embeddings, np.array([0, 0, 1, 1, 2, 2]), path=str(tmp_path / "t.html"),
                                 thumbnails=False, points=points)
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and "plotly" in open(html).read()
    with pytest.raises(ValueError, match=r"\[6, 2\]"):
        plot_tsne(embeddings, path=str(tmp_path / "bad.png"), points=points[:3])
