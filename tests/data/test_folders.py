"""Image folders (scan, read, drop unusable) and the Omniglot materialisation."""

import json
import os
import threading

import cv2
import numpy as np
import pytest

from embedding_net.errors import DatasetError
from embedding_net.data.folders import ImageFolder, drop_unusable, scan_image_folder
from embedding_net.data.images import read_image, read_images
from embedding_net.data.datasets.registry import get_dataset, list_datasets
from embedding_net.data.datasets.omniglot import is_materialized, materialize_omniglot
from embedding_net.data.datasets import omniglot

# ----------------------------------------------------------------------------- helpers


def imwrite(path, image):
    """Writes an image with OpenCV (BGR order), creating the folder; works for any path."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, encoded = cv2.imencode(os.path.splitext(path)[1], image)
    assert ok, path
    encoded.tofile(path)
    return path


def make_folder(root, counts, ext=".png", size=(6, 5)):
    """`root/<class>/<i>.png` with `counts[class]` images; pixel value encodes (class, index)."""
    for c, (name, n) in enumerate(counts.items()):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n):
            imwrite(os.path.join(root, name, f"img{i:02d}{ext}"),
                    np.full((*size, 3), 10 * c + i, np.uint8))
    return str(root)


def assert_error_names(info, *fragments):
    message = str(info.value)
    for fragment in fragments:
        assert str(fragment) in message, f"{fragment!r} not in {message!r}"


# ----------------------------------------------------------------------------- scanning


def test_classes_sorted_and_labels_follow_them(tmp_path):
    root = make_folder(tmp_path / "split", {"zebra": 2, "Apple": 3, "mango": 2, "10": 2, "9": 2})
    folder = scan_image_folder(root)
    assert folder.class_names == ["10", "9", "Apple", "mango", "zebra"]
    assert folder.root == root
    assert len(folder) == 11
    assert folder.labels.dtype == np.int32
    np.testing.assert_array_equal(folder.labels, [0, 0, 1, 1, 2, 2, 2, 3, 3, 4, 4])
    for path, label in zip(folder.paths, folder.labels):
        assert os.path.basename(os.path.dirname(path)) == folder.class_names[label]
        assert os.path.isfile(path)
    # Within a class, files are sorted too.
    apple = [os.path.basename(p) for p, l in zip(folder.paths, folder.labels) if l == 2]
    assert apple == ["img00.png", "img01.png", "img02.png"]
    np.testing.assert_array_equal(folder.class_counts(), [2, 2, 3, 2, 2])


def test_scan_is_deterministic_regardless_of_creation_order(tmp_path):
    a = make_folder(tmp_path / "a", {"x": 2, "y": 2, "z": 2})
    b = make_folder(tmp_path / "b", {"z": 2, "x": 2, "y": 2})
    fa, fb = scan_image_folder(a), scan_image_folder(b)
    assert fa.class_names == fb.class_names
    assert [os.path.relpath(p, a) for p in fa.paths] == [os.path.relpath(p, b) for p in fb.paths]
    np.testing.assert_array_equal(fa.labels, fb.labels)


def test_non_image_hidden_and_system_files_ignored(tmp_path):
    make_folder(tmp_path / "split", {"cat": 2, "dog": 2})
    junk = ["notes.txt", "labels.csv", ".hidden.png", "._img00.png", ".DS_Store", "Thumbs.db",
            "THUMBS.DB", "desktop.ini", "img.png~", "archive.zip", "noextension"]
    for name in junk:
        (tmp_path / "split" / "cat" / name).write_bytes(b"not an image")
    (tmp_path / "split" / "dog" / "nested").mkdir()
    imwrite(tmp_path / "split" / "dog" / "nested" / "deep.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "split" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "split" / "README.md").write_text("root-level file")
    imwrite(tmp_path / "split" / ".cache" / "c.png", np.zeros((4, 4, 3), np.uint8))
    imwrite(tmp_path / "split" / "dog" / "UPPER.PNG", np.zeros((4, 4, 3), np.uint8))
    imwrite(tmp_path / "split" / "dog" / "photo.JPeG", np.zeros((4, 4, 3), np.uint8))

    folder = scan_image_folder(str(tmp_path / "split"))
    assert folder.class_names == ["cat", "dog"]
    names = [os.path.basename(p) for p in folder.paths]
    assert names == ["img00.png", "img01.png", "UPPER.PNG", "img00.png", "img01.png", "photo.JPeG"]
    np.testing.assert_array_equal(folder.labels, [0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("content", ["nothing", "files_only", "hidden_dir_only"])
def test_root_without_class_folders(tmp_path, content):
    root = tmp_path / "split"
    root.mkdir()
    if content == "files_only":
        imwrite(root / "a.png", np.zeros((4, 4, 3), np.uint8))
    elif content == "hidden_dir_only":
        imwrite(root / ".git" / "a.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="no class folders") as info:
        scan_image_folder(str(root))
    assert_error_names(info, root)


def test_missing_folder(tmp_path):
    missing = str(tmp_path / "does" / "not" / "exist")
    with pytest.raises(DatasetError) as info:
        scan_image_folder(missing)
    assert_error_names(info, missing)


def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "file.png"
    path.write_bytes(b"x")
    with pytest.raises(DatasetError) as info:
        scan_image_folder(str(path))
    assert_error_names(info, path)


def test_class_with_too_few_images_named(tmp_path):
    root = make_folder(tmp_path / "split", {"big": 3, "tiny": 1, "medium": 2})
    (tmp_path / "split" / "tiny" / "notes.txt").write_text("does not count")
    with pytest.raises(DatasetError) as info:
        scan_image_folder(root, min_images_per_class=2)
    assert_error_names(info, "tiny (1)", "2", root)
    assert "big" not in str(info.value) and "medium" not in str(info.value)
    # The threshold itself passes.
    assert len(scan_image_folder(root, min_images_per_class=1)) == 6


def test_empty_class_folder_is_excluded_with_a_warning(tmp_path):
    root = make_folder(tmp_path / "split", {"a": 2, "c": 2})
    (tmp_path / "split" / "b_empty").mkdir()
    with pytest.warns(UserWarning, match="excluded 1 class folder.* without images: b_empty$"):
        folder = scan_image_folder(root)
    assert folder.class_names == ["a", "c"]
    np.testing.assert_array_equal(folder.labels, [0, 0, 1, 1])


def test_many_small_classes_are_summarised(tmp_path):
    root = make_folder(tmp_path / "split", {f"c{i}": 1 for i in range(8)})
    with pytest.raises(DatasetError) as info:
        scan_image_folder(root, min_images_per_class=2)
    assert_error_names(info, "c0 (1)", "c4 (1)", "3 more")
    assert "\n" not in str(info.value)


def test_non_ascii_class_and_file_names(tmp_path):
    root = tmp_path / "split"
    imwrite(root / "ñandú" / "日本.png", np.full((4, 4, 3), 1, np.uint8))
    imwrite(root / "ñandú" / "é.png", np.full((4, 4, 3), 2, np.uint8))
    folder = scan_image_folder(str(root), min_images_per_class=2)
    assert folder.class_names == ["ñandú"]
    images, failed = read_images(folder.paths, (4, 4), 3, workers=2)
    assert failed == []
    assert sorted(images[:, 0, 0, 0].tolist()) == [1, 2]


# ----------------------------------------------------------------------------- read_image


def test_read_png_jpg_bmp_and_others(tmp_path):
    image = np.zeros((8, 10, 3), np.uint8)
    image[:, :, 2] = 200  # red in BGR
    image[:, :, 1] = 50
    for ext in (".png", ".jpg", ".bmp", ".tif", ".webp", ".ppm"):
        path = imwrite(tmp_path / f"im{ext}", image)
        rgb = read_image(path)
        assert rgb.shape == (8, 10, 3) and rgb.dtype == np.uint8, ext
        tolerance = 3 if ext in (".jpg", ".webp") else 0
        np.testing.assert_allclose(rgb[..., 0], 200, atol=tolerance, err_msg=ext)  # R first
        np.testing.assert_allclose(rgb[..., 1], 50, atol=tolerance, err_msg=ext)
        np.testing.assert_allclose(rgb[..., 2], 0, atol=tolerance, err_msg=ext)


def test_lossless_read_is_exact_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = imwrite(tmp_path / "a.png", bgr)
    np.testing.assert_array_equal(read_image(path), bgr[..., ::-1])
    np.testing.assert_array_equal(read_image(path, channels=1)[..., 0],
                                  cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))


def test_grayscale_to_three_channels(tmp_path):
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    path = imwrite(tmp_path / "g.png", gray)
    one = read_image(path, channels=1)
    three = read_image(path, channels=3)
    assert one.shape == (5, 6, 1) and three.shape == (5, 6, 3)
    np.testing.assert_array_equal(one[..., 0], gray)
    for c in range(3):
        np.testing.assert_array_equal(three[..., c], gray)


def test_colour_to_one_channel(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[:2] = (255, 0, 0)  # blue
    bgr[2:] = (0, 0, 255)  # red
    path = imwrite(tmp_path / "c.png", bgr)
    gray = read_image(path, channels=1)
    assert gray.shape == (4, 4, 1) and gray.dtype == np.uint8
    # ITU-R BT.601 weights: blue 0.114, red 0.299.
    np.testing.assert_allclose(gray[:2], round(0.114 * 255), atol=1)
    np.testing.assert_allclose(gray[2:], round(0.299 * 255), atol=1)


def test_rgba_is_composited_over_white(tmp_path):
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[..., :3] = (0, 0, 255)  # red
    bgra[0, :, 3] = 255          # opaque row
    bgra[1, 0, 3] = 0            # transparent
    bgra[1, 1:, 3] = 128         # half
    path = imwrite(tmp_path / "rgba.png", bgra)
    rgb = read_image(path)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0], [[255, 0, 0]] * 3)
    np.testing.assert_array_equal(rgb[1, 0], [255, 255, 255])
    half = 255 * (1 - 128 / 255)
    np.testing.assert_allclose(rgb[1, 1], [255, half, half], atol=1)
    gray = read_image(path, channels=1)
    assert gray.shape == (2, 3, 1)
    assert gray[1, 0, 0] == 255


def test_16_bit_png(tmp_path):
    gray16 = np.array([[0, 255, 256, 65535], [32768, 1000, 40000, 65280]], np.uint16)
    path = imwrite(tmp_path / "g16.png", gray16)
    image = read_image(path, channels=1)
    assert image.dtype == np.uint8 and image.shape == (2, 4, 1)
    np.testing.assert_array_equal(image[..., 0], (gray16 >> 8).astype(np.uint8))

    colour16 = np.zeros((3, 3, 3), np.uint16)
    colour16[..., 2] = 65535
    rgb = read_image(imwrite(tmp_path / "c16.png", colour16))
    assert rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])


def test_float_tiff_is_scaled(tmp_path):
    path = imwrite(tmp_path / "f.tif", np.full((3, 3), 0.5, np.float32))
    image = read_image(path, channels=1)
    assert image.dtype == np.uint8
    assert abs(int(image[0, 0, 0]) - 127) <= 1


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(20, 30), (3, 2), (8, 10)])
def test_resize(tmp_path, size, channels):
    path = imwrite(tmp_path / "a.png", np.random.default_rng(1).integers(0, 256, (8, 10, 3), np.uint8))
    image = read_image(path, size=size, channels=channels)
    assert image.shape == (*size, channels)
    assert image.dtype == np.uint8


def test_resize_keeps_constant_image_constant(tmp_path):
    path = imwrite(tmp_path / "a.png", np.full((50, 40), 77, np.uint8))
    for size in [(10, 10), (105, 80), (28, 28)]:
        image = read_image(path, size=list(size), channels=1)
        assert image.shape == (*size, 1)
        assert (image == 77).all()


def test_non_ascii_file_name(tmp_path):
    path = imwrite(tmp_path / "ünïcødé 日本語" / "ñ.png", np.full((3, 4, 3), 9, np.uint8))
    image = read_image(path)
    assert image.shape == (3, 4, 3)
    assert (image == 9).all()


@pytest.mark.parametrize("kind", ["zero_byte", "text_as_jpg", "truncated_png", "missing", "directory"])
def test_unreadable_file_names_the_path(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.jpg"
    if kind == "zero_byte":
        path.write_bytes(b"")
    elif kind == "text_as_jpg":
        path.write_text("this is not a jpeg\n" * 10)
    elif kind == "truncated_png":
        path = tmp_path / "bad_truncated.png"
        ok, data = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (40, 40, 3), np.uint8))
        path.write_bytes(data.tobytes()[:20])
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(DatasetError) as info:
        read_image(str(path))
    assert_error_names(info, path)


# ----------------------------------------------------------------------------- read_images


def test_read_images_reports_failures_and_leaves_zeros(tmp_path):
    good = [imwrite(tmp_path / f"g{i}.png", np.full((6, 6, 3), 50 + i, np.uint8)) for i in range(4)]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello")
    paths = [good[0], str(text), good[1], good[2], str(empty), good[3]]
    images, failed = read_images(paths, (4, 5), 3, workers=3)
    assert images.shape == (6, 4, 5, 3) and images.dtype == np.uint8
    assert [p for p, _ in failed] == sorted([str(text), str(empty)])
    for path, reason in failed:
        assert path in reason
    assert (images[1] == 0).all() and (images[4] == 0).all()
    for index, value in [(0, 50), (2, 51), (3, 52), (5, 53)]:
        assert (images[index] == value).all()


def test_read_images_matches_read_image(tmp_path):
    rng = np.random.default_rng(3)
    paths = [imwrite(tmp_path / f"{i}.png", rng.integers(0, 256, (9, 7, 3), np.uint8)) for i in range(5)]
    images, failed = read_images(paths, (5, 6), 1)
    assert failed == []
    for image, path in zip(images, paths):
        np.testing.assert_array_equal(image, read_image(path, (5, 6), 1))


def test_read_images_empty_list():
    images, failed = read_images([], (4, 4), 1)
    assert images.shape == (0, 4, 4, 1) and failed == []


# ----------------------------------------------------------------------------- drop_unusable / subset


def test_drop_unusable_drops_files_then_small_classes(tmp_path):
    root = make_folder(tmp_path / "split", {"a": 3, "b": 2, "c": 2, "d": 2})
    # A broken file in "a" (3 -> 2, kept) and in "c" (2 -> 1, dropped).
    (tmp_path / "split" / "a" / "img01.png").write_bytes(b"")
    (tmp_path / "split" / "c" / "img00.png").write_text("text")
    folder = scan_image_folder(root)
    _, failed = read_images(folder.paths, (4, 4), 1)
    assert len(failed) == 2
    with pytest.warns(UserWarning) as record:
        kept, keep = drop_unusable(folder, failed, min_images_per_class=2)
    messages = [str(w.message) for w in record]
    assert any("2 unreadable" in m and "img01.png" in m for m in messages), messages
    assert any("excluded 1 class" in m and "c" in m for m in messages), messages
    assert kept.class_names == ["a", "b", "d"]
    np.testing.assert_array_equal(kept.labels, [0, 0, 1, 1, 2, 2])
    assert keep.dtype == bool and keep.sum() == 6
    np.testing.assert_array_equal(keep, [True, False, True, True, True, False, False, True, True])
    assert [p for p, k in zip(folder.paths, keep) if k] == kept.paths
    for path, label in zip(kept.paths, kept.labels):
        assert os.path.basename(os.path.dirname(path)) == kept.class_names[label]


def test_drop_unusable_without_failures_is_silent(tmp_path, recwarn):
    folder = scan_image_folder(make_folder(tmp_path / "split", {"a": 2, "b": 3}))
    kept, keep = drop_unusable(folder, [])
    assert len(recwarn) == 0
    assert kept.class_names == folder.class_names and kept.paths == folder.paths
    assert keep.all()


def test_drop_unusable_small_class_without_failures_warns(tmp_path):
    folder = scan_image_folder(make_folder(tmp_path / "split", {"a": 2, "b": 1}))
    with pytest.warns(UserWarning, match="b"):
        kept, _ = drop_unusable(folder, [], min_images_per_class=2)
    assert kept.class_names == ["a"]


def test_subset_renumbers_labels():
    folder = ImageFolder(
        root="r",
        paths=[f"p{i}" for i in range(7)],
        labels=np.array([0, 0, 1, 1, 2, 3, 3], np.int32),
        class_names=["w", "x", "y", "z"],
    )
    sub = folder.subset([False, False, True, True, False, True, False])
    assert sub.class_names == ["x", "z"]
    assert sub.paths == ["p2", "p3", "p5"]
    np.testing.assert_array_equal(sub.labels, [0, 0, 1])
    assert sub.labels.dtype == np.int32
    assert sub.root == "r"
    np.testing.assert_array_equal(sub.class_counts(), [2, 1])
    # The original is untouched.
    np.testing.assert_array_equal(folder.labels, [0, 0, 1, 1, 2, 3, 3])
    empty = folder.subset(np.zeros(7, bool))
    assert len(empty) == 0 and empty.class_names == []


# ----------------------------------------------------------------------------- Omniglot

ALPHABETS = {"Latin", "Atlantean"}  # Latin: background (train) set; Atlantean: evaluation (val)


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("omniglot") / "omni")
    assert materialize_omniglot(root, alphabets=ALPHABETS) == root
    return root


def test_omniglot_is_registered():
    assert list_datasets() == ["omniglot"] and get_dataset("omniglot") is materialize_omniglot


def test_omniglot_class_folders(omni):
    assert is_materialized(omni)
    assert sorted(os.listdir(omni)) == sorted(["train", "val", "oneshot_runs.json", omniglot.MARKER])
    train = sorted(os.listdir(os.path.join(omni, "train")))
    val = sorted(os.listdir(os.path.join(omni, "val")))
    assert train == [f"Latin__character{i:02d}" for i in range(1, 27)]
    assert val == [f"Atlantean__character{i:02d}" for i in range(1, 27)]
    folder = scan_image_folder(os.path.join(omni, "train"), min_images_per_class=20)
    assert folder.class_names == train
    np.testing.assert_array_equal(folder.class_counts(), [20] * 26)


def test_omniglot_file_names_and_pixels(omni):
    for split, alphabet in [("train", "Latin"), ("val", "Atlantean")]:
        with np.load(os.path.join(omniglot.SOURCE_DIR, omniglot.SPLIT_FILES[split])) as npz:
            index = int(np.flatnonzero((npz["alphabet"] == alphabet) & (npz["character"] == "character01"))[0])
            character_id = int(npz["character_id"][index])
            expected = npz["images"][index].astype(np.uint8) * 255
        folder = os.path.join(omni, split, f"{alphabet}__character01")
        names = sorted(os.listdir(folder))
        assert names == [f"{character_id:04d}_{drawer:02d}.png" for drawer in range(1, 21)]
        for drawer, name in enumerate(names):
            image = cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED)
            assert image.shape == (105, 105) and image.dtype == np.uint8
            assert set(np.unique(image).tolist()) <= {0, 255}
            assert (image == 255).mean() > 0.5  # white background, dark strokes
            assert (image == 0).any()
            np.testing.assert_array_equal(image, expected[drawer])
    # The original Omniglot ids: Latin character01 is 0683, Atlantean character01 is 1011.
    assert os.path.isfile(os.path.join(omni, "train", "Latin__character01", "0683_01.png"))
    assert os.path.isfile(os.path.join(omni, "val", "Atlantean__character01", "1011_20.png"))


def test_omniglot_oneshot_runs_keep_only_complete_runs(omni):
    with open(os.path.join(omni, "oneshot_runs.json"), encoding="utf-8") as handle:
        runs = json.load(handle)
    with open(os.path.join(omniglot.SOURCE_DIR, omniglot.ONESHOT_FILE), encoding="utf-8") as handle:
        official = json.load(handle)
    expected_runs = [r["run"] for r in official["runs"] if r["support"][0].startswith("Atlantean/")]
    assert expected_runs  # the official file has Atlantean runs
    assert [r["run"] for r in runs["runs"]] == expected_runs
    assert "dataset root" in runs["description"]
    official_by_run = {r["run"]: r for r in official["runs"]}
    for run in runs["runs"]:
        assert len(run["support"]) == 20 and len(run["trials"]) == 20
        paths = run["support"] + [t["query"] for t in run["trials"]] + [t["answer"] for t in run["trials"]]
        for path in paths:
            assert path.startswith("val/Atlantean__character"), path
            assert os.path.isfile(os.path.join(omni, path)), path
        # Same images as the official run, in the new layout.
        source = official_by_run[run["run"]]
        assert [p.replace("val/", "").replace("__", "/", 1) for p in run["support"]] == source["support"]
        for trial, official_trial in zip(run["trials"], source["trials"]):
            assert trial["query"].replace("val/", "").replace("__", "/", 1) == official_trial["query"]
            assert trial["answer"].replace("val/", "").replace("__", "/", 1) == official_trial["answer"]
            # The answer is one of the support images.
            assert trial["answer"] in run["support"]


def test_omniglot_marker(omni):
    with open(os.path.join(omni, omniglot.MARKER), encoding="utf-8") as handle:
        marker = json.load(handle)
    assert marker["dataset"] == "omniglot"
    assert marker["images"] == {"train": 26 * 20, "val": 26 * 20}
    assert marker["oneshot_runs"] == 2
    assert marker["alphabets"] == sorted(ALPHABETS)


def _snapshot(root):
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(root) for f in files}


def test_omniglot_second_call_is_a_no_op(omni, monkeypatch):
    before = _snapshot(omni)

    def must_not_write(*args, **kwargs):
        raise AssertionError("materialize_omniglot rewrote a complete dataset")

    monkeypatch.setattr(omniglot, "_write_split", must_not_write)
    monkeypatch.setattr(omniglot, "_convert_oneshot_runs", must_not_write)
    assert materialize_omniglot(omni, alphabets=ALPHABETS) == omni
    assert materialize_omniglot(omni) == omni  # a complete dataset is kept whatever is asked
    assert _snapshot(omni) == before
    assert not [n for n in os.listdir(os.path.dirname(omni)) if ".partial-" in n]


def test_omniglot_existing_incomplete_root_is_refused(tmp_path):
    root = tmp_path / "omni"
    (root / "train" / "x").mkdir(parents=True)
    (root / "oneshot_runs.json").write_text("{}")
    assert not is_materialized(str(root))
    with pytest.raises(DatasetError) as info:
        materialize_omniglot(str(root), alphabets={"Latin"})
    assert_error_names(info, root, omniglot.MARKER)
    assert not is_materialized(str(root))
    # Left as it was: nothing deleted, nothing added.
    assert sorted(os.listdir(root)) == ["oneshot_runs.json", "train"]
    assert os.listdir(root / "train") == ["x"]


def test_omniglot_empty_existing_root_is_refused(tmp_path):
    root = tmp_path / "omni"
    root.mkdir()
    with pytest.raises(DatasetError):
        materialize_omniglot(str(root), alphabets={"Latin"})
    assert os.listdir(root) == []


def test_omniglot_removes_stale_partial_folder_and_creates_parents(tmp_path):
    root = tmp_path / "deep" / "parents" / "omni"
    stale = tmp_path / "deep" / "parents" / "omni.partial-99999999"  # above any pid_max: dead
    (stale / "train" / "junk").mkdir(parents=True)
    (stale / "train" / "junk" / "0001_01.png").write_bytes(b"half")
    unrelated = tmp_path / "deep" / "parents" / "omni2.partial-5"
    unrelated.mkdir()
    assert materialize_omniglot(str(root), alphabets={"Latin"}) == str(root)
    assert not stale.exists()
    assert unrelated.exists()  # another dataset's folder is not touched
    assert is_materialized(str(root))
    assert sorted(os.listdir(root / "train"))[0] == "Latin__character01"
    assert not [n for n in os.listdir(root.parent) if n.startswith("omni.partial-")]


def _assert_nothing_left(root):
    assert not os.path.exists(root)
    assert not is_materialized(root)
    parent = os.path.dirname(root)
    assert not [n for n in os.listdir(parent) if n.startswith(os.path.basename(root) + ".partial-")]


def test_omniglot_interrupted_while_writing_images(tmp_path, monkeypatch):
    root = str(tmp_path / "omni")
    real_imwrite = cv2.imwrite
    lock = threading.Lock()
    calls = []

    def flaky_imwrite(path, image, *args):
        with lock:
            calls.append(path)
            count = len(calls)
        if count == 150:
            raise KeyboardInterrupt("simulated interruption")
        return real_imwrite(path, image, *args)

    monkeypatch.setattr(omniglot.cv2, "imwrite", flaky_imwrite)
    with pytest.raises(KeyboardInterrupt):
        materialize_omniglot(root, alphabets=ALPHABETS)
    assert len(calls) >= 150
    _assert_nothing_left(root)

    # A failed write (imwrite returning False, e.g. a full disk) also leaves nothing.
    calls.clear()

    def failing_imwrite(path, image, *args):
        with lock:
            calls.append(path)
            count = len(calls)
        return False if count == 30 else real_imwrite(path, image, *args)

    monkeypatch.setattr(omniglot.cv2, "imwrite", failing_imwrite)
    with pytest.raises(DatasetError):
        materialize_omniglot(root, alphabets={"Latin"})
    _assert_nothing_left(root)

    # And the next run succeeds.
    monkeypatch.setattr(omniglot.cv2, "imwrite", real_imwrite)
    materialize_omniglot(root, alphabets={"Latin"})
    assert is_materialized(root)


def test_omniglot_interrupted_while_converting_runs(tmp_path, monkeypatch):
    root = str(tmp_path / "omni")

    def interrupted(*args, **kwargs):
        raise RuntimeError("simulated crash after the images were written")

    monkeypatch.setattr(omniglot, "_convert_oneshot_runs", interrupted)
    with pytest.raises(RuntimeError, match="simulated crash"):
        materialize_omniglot(root, alphabets=ALPHABETS)
    _assert_nothing_left(root)


def test_add_rotated_classes_makes_new_classes_of_turned_images():
    from embedding_net.data.folders import ImageFolder, add_rotated_classes

    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4, 1)
    folder = ImageFolder("root", ["a0", "a1", "b0"], np.array([0, 0, 1], np.int32), ["a", "b"])
    rotated, rotated_images = add_rotated_classes(folder, images)
    assert rotated.class_names == ["a", "b", "a@rot90", "b@rot90", "a@rot180", "b@rot180",
                                   "a@rot270", "b@rot270"]
    assert rotated.labels.tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6, 7]
    assert rotated_images.shape == (12, 4, 4, 1)
    for turns in range(4):
        for i in range(3):
            expected = np.rot90(images[i], k=turns, axes=(0, 1))
            np.testing.assert_array_equal(rotated_images[3 * turns + i], expected)


def test_add_rotated_classes_needs_square_images():
    from embedding_net.data.folders import ImageFolder, add_rotated_classes

    folder = ImageFolder("root", ["a0", "a1"], np.array([0, 0], np.int32), ["a"])
    with pytest.raises(DatasetError, match="square"):
        add_rotated_classes(folder, np.zeros((2, 4, 5, 1), np.uint8))


def test_omniglot_keeps_the_partial_folder_of_a_live_process(tmp_path):
    root = tmp_path / "omni"
    live = tmp_path / f"omni.partial-{os.getppid()}"  # another run, still writing
    (live / "train").mkdir(parents=True)
    materialize_omniglot(str(root), alphabets={"Latin", "Atlantean"})
    assert live.exists() and is_materialized(str(root))


@pytest.mark.parametrize("alphabets, message", [
    ({"Latin", "Klingon"}, "unknown Omniglot alphabet.*Klingon"),
    ({"Atlantean"}, "train split empty"),
])
def test_omniglot_alphabet_subsets_are_checked(tmp_path, alphabets, message):
    with pytest.raises(DatasetError, match=message):
        materialize_omniglot(str(tmp_path / "omni"), alphabets=alphabets)
    assert not (tmp_path / "omni").exists()
