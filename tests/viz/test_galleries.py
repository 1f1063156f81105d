"""The neighbour gallery and the batch grid: whole class names, distances, and a batch picture
that stays readable (bounded size, roughly 4:3) whatever the batch and image size."""

import cv2
import numpy as np
import pytest

from embedding_net.viz import galleries, mosaic, reports

OMNIGLOT = ["Atlantean__character09", "Tifinagh__character55", "Japanese_(hiragana)__character13",
            "Blackfoot_(Canadian_Aboriginal_Syllabics)__character14"]


class Folder:
    """The parts of an `ImageFolder` that `plot_gallery` reads."""

    def __init__(self, count, class_names):
        self.paths, self.labels = [f"{i}.png" for i in range(count)], np.arange(count) % 4
        self.class_names = class_names

    def __len__(self):
        return len(self.paths)


@pytest.fixture
def texts(monkeypatch):
    """The texts of every figure the galleries save (the figures are still written)."""
    drawn, write = [], mosaic.save_figure

    def save(figure, path, dpi=100):
        drawn.append([t.get_text() for axes in figure.axes for t in axes.texts])
        return write(figure, path, dpi)

    monkeypatch.setattr(mosaic, "save_figure", save)
    return drawn


def size_of(path):
    image = cv2.imread(str(path))
    assert image is not None, path
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize("width", [8, 12, 20])
def test_wrapped_names_are_whole_and_fit_their_lines(width):
    for name in OMNIGLOT:
        wrapped = mosaic.wrap_name(name, width, max_lines=8)
        lines = wrapped.split("\n")
        assert "".join(lines) == name and all(len(line) <= width for line in lines)
    assert mosaic.wrap_name("Atlantean__character09", 20) == "Atlantean__\ncharacter09"


def test_a_name_too_long_for_its_lines_keeps_both_ends():
    wrapped = mosaic.wrap_name("Blackfoot_(Canadian_Aboriginal_Syllabics)__character14", 10, max_lines=3)
    lines = wrapped.split("\n")
    assert len(lines) <= 3 and all(len(line) <= 10 for line in lines)
    assert wrapped.startswith("Blackfoot") and wrapped.replace("\n", "").endswith("character14") and "…" in wrapped


def test_caption_has_the_whole_name_the_distance_and_the_verdict():
    hit = galleries.gallery_caption("Tifinagh__character55", 0.25, True)
    miss = galleries.gallery_caption("Tifinagh__character55", 1.5, False)
    assert "Tifinagh__character55" in hit.replace("\n", "")
    assert hit.endswith("✓ d = 0.250") and miss.endswith("✗ d = 1.500")
    assert galleries.gallery_caption("a", role="query") == "query\na"


def test_neighbour_gallery_shows_names_and_distances(tmp_path, texts):
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], np.full((30, 30), 60 * i, np.uint8))
    labels = np.array([0, 1, 0, 1])
    neighbours, distances = [[2, 1], [3, 0]], [[0.125, 0.5], [0.25, 2.0]]
    galleries.plot_neighbour_gallery(paths[:2], labels[:2], paths, labels, neighbours, str(tmp_path / "n.png"),
                                     class_names=OMNIGLOT[:2], distances=distances)
    captions = [caption.replace("\n", "") for caption in texts[0]]
    assert captions == [
        "query" + OMNIGLOT[0], OMNIGLOT[0] + "✓ d = 0.125", OMNIGLOT[1] + "✗ d = 0.500",
        "query" + OMNIGLOT[1], OMNIGLOT[1] + "✓ d = 0.250", OMNIGLOT[0] + "✗ d = 2.000"]
    galleries.plot_neighbour_gallery(paths[:1], labels[:1], paths, labels, [[1]], str(tmp_path / "old.png"))
    assert [caption.replace("\n", "") for caption in texts[1]] == ["query0", "1✗"]  # no distances: none shown
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        galleries.plot_neighbour_gallery(paths[:2], labels[:2], paths, labels, neighbours,
                                         str(tmp_path / "bad.png"), distances=[0.1, 0.2])


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_plot_gallery_passes_the_distances_it_searched_by(monkeypatch, distance):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(20, 5)).astype(np.float32)
    calls = []
    monkeypatch.setattr(reports, "plot_neighbour_gallery", lambda *args, **kwargs: calls.append((args, kwargs)))
    reports.plot_gallery(Folder(20, OMNIGLOT), embeddings, "unused.png", distance=distance, queries=6)
    (query_paths, _, _, _, neighbours, _), kwargs = calls[0]
    queries = [int(p.split(".")[0]) for p in query_paths]
    a, b = embeddings[queries][:, None], embeddings[neighbours]
    if distance == "cosine":
        expected = 1 - np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    else:
        expected = np.linalg.norm(a - b, axis=-1)
    assert neighbours.shape == (6, 5) and not any(q in row for q, row in zip(queries, neighbours))
    np.testing.assert_allclose(kwargs["distances"], expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.diff(kwargs["distances"], axis=1) >= -1e-6)  # nearest first


@pytest.mark.parametrize("classes, per_class, size", [(32, 4, 28), (16, 4, 224), (64, 8, 28)])
def test_batch_is_a_grid_of_named_classes_of_bounded_size(tmp_path, texts, classes, per_class, size):
    images = np.random.default_rng(0).integers(0, 255, (classes * per_class, size, size, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(classes), per_class)
    names = [f"{OMNIGLOT[c % 4]}_{c}" for c in range(classes)]
    out = galleries.plot_batch(images, labels, str(tmp_path / "batch.png"), class_names=names, columns=per_class)
    width, height = size_of(out)
    assert max(width, height) <= mosaic.MAX_PIXELS and min(width, height) >= 400
    assert 1.0 <= width / height <= 2.0  # a 32 x 4 batch used to be a 565 x 4777 strip
    assert [heading.replace("\n", "") for heading in texts[0]] == names  # one whole name per class


def test_batch_groups_each_class_in_order_of_first_appearance(tmp_path, texts):
    images = np.zeros((6, 8, 8, 3), np.uint8)
    red = np.array([10, 200, 10, 90, 200, 90])  # the class of each image, as its red channel
    images[..., 0] = red[:, None, None]
    out = galleries.plot_batch(images, [2, 0, 2, 1, 0, 1], str(tmp_path / "b.png"), class_names=["a", "b", "c"],
                               groups_per_row=3)
    assert texts[0] == ["c", "a", "b"]
    picture = cv2.cvtColor(cv2.imread(out), cv2.COLOR_BGR2RGB).astype(int)
    coloured = picture[..., 1:].max(axis=-1) <= 2  # image pixels; the white background and grey text are not
    columns = [np.nonzero(coloured & (np.abs(picture[..., 0] - value) < 4))[1] for value in (10, 200, 90)]
    assert all(len(c) for c in columns)
    assert columns[0].max() < columns[1].min() and columns[1].max() < columns[2].min()  # c | a | b
    with pytest.raises(ValueError, match="groups_per_row"):
        galleries.plot_batch(images, [0] * 6, str(tmp_path / "x.png"), groups_per_row=-1)
