"""Issue #6: each kind of bad input in a data folder, and the outcome defined for it.

Unreadable files are skipped with one warning listing them and a count, unusable classes are
excluded with one warning, and what is left trains; a split left with fewer than 2 classes, or
fewer than P, fails before training.
"""

import os
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest

from embedding_net.data import images as images_module
from embedding_net.data.folders import drop_unusable, scan_image_folder
from embedding_net.data.images import find_unreadable, read_image, read_images
from embedding_net.errors import ConfigError, DatasetError

# ----------------------------------------------------------------------------- helpers


def imwrite(path, image, ext=None, params=()):
    """Writes an image with OpenCV (BGR order), creating the folder; works for any path."""
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, encoded = cv2.imencode(ext or os.path.splitext(path)[1], image, list(params))
    assert ok, path
    encoded.tofile(path)
    return path


def good_class(root, name, count, value=100):
    for i in range(count):
        imwrite(os.path.join(root, name, f"ok{i}.png"), np.full((6, 6, 3), value + i, np.uint8))


def jpeg_bytes(shape=(64, 64, 3), seed=0):
    image = np.random.default_rng(seed).integers(0, 256, shape, np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def load(root, size=(8, 8), channels=3, min_images_per_class=2):
    """scan -> read_images -> drop_unusable, as training does with images in memory."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder = scan_image_folder(str(root))
        images, failed = read_images(folder.paths, size, channels, workers=2)
        kept, keep = drop_unusable(folder, failed, min_images_per_class)
    return kept, images[keep], [str(w.message) for w in caught]


def pil_image():
    return pytest.importorskip("PIL.Image")


# ----------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("kind, reason", [
    ("zero_byte", "empty file"),
    ("truncated_half", "truncated JPEG (no end-of-image marker)"),
    ("truncated_end_marker", "truncated JPEG (no end-of-image marker)"),
    ("truncated_header", "truncated JPEG (ends before its image data)"),
    ("text_as_jpg", "not an image OpenCV can decode"),
    ("pixel_bomb", "OpenCV refused it"),
])
def test_unreadable_file_is_skipped_with_one_warning(tmp_path, kind, reason):
    root = tmp_path / "train"
    good_class(root, "a", 2)
    good_class(root, "b", 2)
    bad = root / "a" / "bad.jpg"
    data = jpeg_bytes()
    if kind == "zero_byte":
        bad.write_bytes(b"")
    elif kind == "truncated_half":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_end_marker":
        bad.write_bytes(data[:-2])  # only the final FF D9 missing
    elif kind == "truncated_header":
        bad.write_bytes(data[:100])
    elif kind == "text_as_jpg":
        bad.write_text("this is not a jpeg\n" * 10)
    else:  # a PNG header claiming 60000 x 60000 pixels: over OpenCV's limit, cv2.error
        bad = root / "a" / "bad.png"
        bad.write_bytes(_png_claiming(60000, 60000))
    kept, images, messages = load(root)
    assert len(messages) == 1  # the OpenCV message after "refused it" depends on its version
    assert messages[0].startswith(f"skipped 1 unreadable image(s) in {root}: a/{bad.name} ({reason}")
    assert kept.class_names == ["a", "b"] and len(kept) == 4 and str(bad) not in kept.paths
    assert images.shape == (4, 8, 8, 3) and (images > 0).all()


def _png_claiming(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_many_unreadable_files_make_one_warning_with_a_count(tmp_path):
    root = tmp_path / "train"
    good_class(root, "a", 2)
    for i in range(14):
        (root / "a" / f"bad{i:02d}.jpg").write_bytes(b"")
    _, _, messages = load(root, min_images_per_class=1)
    assert len(messages) == 1
    assert messages[0].startswith(f"skipped 14 unreadable image(s) in {root}: ")
    assert "bad09.jpg (empty file)" in messages[0] and "bad10.jpg" not in messages[0]
    assert messages[0].endswith(" and 4 more") and "\n" not in messages[0]


def test_jpeg_with_data_after_its_end_marker_is_read(tmp_path):
    # Motion photos and some cameras append data (a video, maker notes) after the JPEG.
    path = tmp_path / "motion.jpg"
    path.write_bytes(jpeg_bytes() + b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 4)
    assert read_image(str(path)).shape == (64, 64, 3)


def test_truncation_check_skips_segments_holding_an_end_marker(tmp_path):
    # An APP15 segment holding FF D9 (as an EXIF thumbnail does): a naive search would find it.
    data = jpeg_bytes()
    payload = b"thumb\xff\xd9" * 4
    with_segment = data[:2] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    whole.write_bytes(with_segment)
    cut.write_bytes(with_segment[: len(with_segment) // 2])
    assert read_image(str(whole)).shape == (64, 64, 3)
    with pytest.raises(DatasetError, match="truncated JPEG"):
        read_image(str(cut))


def test_find_unreadable_finds_what_the_signature_check_passes(tmp_path):
    good = imwrite(tmp_path / "good.jpg", np.zeros((80, 80, 3), np.uint8))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg_bytes()[:300])
    assert cv2.haveImageReader(str(truncated))  # what load_split checks without a memory cache
    failed = find_unreadable([good, str(truncated)], workers=2)
    assert [path for path, _ in failed] == [str(truncated)]


# ----------------------------------------------------------------------------- files and folders


def test_ds_store_and_thumbs_db_are_ignored_silently(tmp_path):
    root = tmp_path / "train"
    good_class(root, "a", 2)
    good_class(root, "b", 2)
    for name in (".DS_Store", "Thumbs.db", "desktop.ini", "._ok0.png"):
        (root / "a" / name).write_bytes(b"\0\1junk")
    (root / ".DS_Store").write_bytes(b"\0\1junk")
    kept, _, messages = load(root)
    assert messages == []
    assert len(kept) == 4


def test_class_with_one_image_is_excluded_with_a_warning(tmp_path):
    root = tmp_path / "train"
    good_class(root, "a", 2)
    good_class(root, "b", 2)
    good_class(root, "single", 1)
    kept, images, messages = load(root)
    assert messages == [f"excluded 1 class(es) of {root} with fewer than 2 readable images: single (1)"]
    assert kept.class_names == ["a", "b"] and len(images) == 4
    # Reference encodings accept classes of one image (enrolment).
    kept, _, messages = load(root, min_images_per_class=1)
    assert messages == [] and kept.class_names == ["a", "b", "single"]


def test_class_left_with_one_readable_image_is_excluded_too(tmp_path):
    root = tmp_path / "train"
    good_class(root, "a", 2)
    good_class(root, "b", 1)
    (root / "b" / "broken.png").write_bytes(b"")
    good_class(root, "c", 2)
    kept, _, messages = load(root)
    assert len(messages) == 2
    assert messages[0].startswith("skipped 1 unreadable image(s)") and "b/broken.png" in messages[0]
    assert messages[1] == f"excluded 1 class(es) of {root} with fewer than 2 readable images: b (1)"
    assert kept.class_names == ["a", "c"]


def test_empty_class_folder_is_excluded_with_a_warning(tmp_path):
    root = tmp_path / "train"
    good_class(root, "a", 2)
    good_class(root, "c", 2)
    (root / "b").mkdir()
    (root / "d").mkdir()
    (root / "d" / "Thumbs.db").write_bytes(b"x")  # only junk: no images either
    kept, _, messages = load(root)
    assert messages == [f"excluded 2 class folder(s) of {root} without images: b, d"]
    assert kept.class_names == ["a", "c"]
    np.testing.assert_array_equal(kept.labels, [0, 0, 1, 1])


def test_nested_folders(tmp_path):
    root = tmp_path / "train"
    good_class(root, "a", 2)
    good_class(root / "a", "deeper", 3)  # images below a class folder are not read
    good_class(root / "b", "2019", 2)    # a class whose images are all one level too deep
    good_class(root, "c", 2)
    kept, _, messages = load(root)
    assert messages == [f"excluded 1 class folder(s) of {root} without images (images in sub-folders "
                        f"of a class folder are not read): b"]
    assert kept.class_names == ["a", "c"] and len(kept) == 4
    # The split folder itself one level too deep: train/train/<class>/<image>.
    nested = tmp_path / "nested"
    good_class(nested / "train", "a", 2)
    with pytest.raises(DatasetError) as info:
        load(nested)
    assert str(info.value) == (f"no images in the class folders of {nested} (images in sub-folders of a "
                               f"class folder are not read): expected {nested}/<class>/<image>")


def test_non_ascii_class_and_file_names(tmp_path):
    root = tmp_path / "données"
    imwrite(root / "ñandú" / "日本.png", np.full((4, 4, 3), 10, np.uint8))
    imwrite(root / "ñandú" / "é è.jpg", np.full((16, 16, 3), 20, np.uint8))
    imwrite(root / "Ωμέγα" / "фото.png", np.full((4, 4, 3), 30, np.uint8))
    imwrite(root / "Ωμέγα" / "🙂.webp", np.full((4, 4, 3), 40, np.uint8), params=[cv2.IMWRITE_WEBP_QUALITY, 101])
    kept, images, messages = load(root, size=(4, 4))
    assert messages == []
    assert kept.class_names == ["ñandú", "Ωμέγα"]
    assert [os.path.basename(p) for p in kept.paths] == ["é è.jpg", "日本.png", "фото.png", "🙂.webp"]
    np.testing.assert_allclose(images[:, 0, 0, 0], [20, 10, 30, 40], atol=2)


# ----------------------------------------------------------------------------- pixel formats


def test_16_bit_png_keeps_its_high_byte(tmp_path):
    bgr16 = np.zeros((5, 7, 3), np.uint16)
    bgr16[..., 2] = 65535   # red
    bgr16[..., 1] = 0x8080  # half green
    image = read_image(imwrite(tmp_path / "c16.png", bgr16))
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    assert (image == [255, 0x80, 0]).all()
    gray = read_image(imwrite(tmp_path / "g16.png", np.full((5, 7), 0x1234, np.uint16)), (3, 3), 1)
    assert gray.shape == (3, 3, 1) and (gray == 0x12).all()


def test_rgba_png_is_composited_over_white(tmp_path):
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., :3] = (255, 0, 0)  # blue
    bgra[:2, :, 3] = 255         # opaque top half
    rgb = read_image(imwrite(tmp_path / "rgba.png", bgra))
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert (rgb[:2] == [0, 0, 255]).all() and (rgb[2:] == 255).all()
    gray = read_image(str(tmp_path / "rgba.png"), (2, 2), 1)
    assert gray.shape == (2, 2, 1) and (gray[1] == 255).all()


@pytest.mark.parametrize("channels", [3, 1])
def test_cmyk_jpeg_is_read_in_rgb(tmp_path, channels):
    Image = pil_image()
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :8] = (255, 0, 0)
    rgb[:, 8:16] = (0, 255, 0)
    rgb[:, 16:] = (0, 0, 255)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)
    assert Image.open(path).mode == "CMYK"
    image = read_image(str(path), channels=channels)
    assert image.shape == (16, 24, channels) and image.dtype == np.uint8
    if channels == 3:
        np.testing.assert_allclose(image[8, [3, 11, 20]], [[255, 0, 0], [0, 255, 0], [0, 0, 255]], atol=8)
    else:  # BT.601 luma of red, green, blue
        np.testing.assert_allclose(image[8, [3, 11, 20], 0], [76, 150, 29], atol=8)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_grayscale_image_in_an_rgb_config(tmp_path, ext):
    gray = np.full((16, 16), 90, np.uint8)
    gray[:8] = 200
    image = read_image(imwrite(tmp_path / f"gray{ext}", gray), (8, 8), channels=3)
    assert image.shape == (8, 8, 3) and image.dtype == np.uint8
    assert (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    np.testing.assert_allclose(image[:4, :, 0], 200, atol=3)
    np.testing.assert_allclose(image[4:, :, 0], 90, atol=3)


def test_10000_by_10000_png(tmp_path):
    big = np.full((10000, 10000), 77, np.uint8)  # 100 MB decoded, 100 kB on disk
    path = imwrite(tmp_path / "big.png", big)
    del big
    assert os.path.getsize(path) < 1_000_000
    image = read_image(path, (32, 32), channels=3)
    assert image.shape == (32, 32, 3) and (image == 77).all()


def test_10000_by_10000_jpeg_is_decoded_at_one_eighth(tmp_path, monkeypatch):
    big = np.full((10000, 10000, 3), (30, 60, 90), np.uint8)
    path = imwrite(tmp_path / "big.jpg", big)
    del big
    flags = []
    real = images_module.cv2.imdecode
    monkeypatch.setattr(images_module.cv2, "imdecode", lambda data, flag: flags.append(flag) or real(data, flag))
    image = read_image(path, (224, 224), channels=3)
    assert flags == [cv2.IMREAD_REDUCED_COLOR_8]  # 1250 x 1250 decoded instead of 10000 x 10000
    assert image.shape == (224, 224, 3)
    np.testing.assert_allclose(image[100, 100], [90, 60, 30], atol=3)


@pytest.mark.parametrize("stored, size, channels, flag", [
    ((800, 1000), (100, 100), 3, cv2.IMREAD_REDUCED_COLOR_8),      # 800 // 8 = 100: enough
    ((800, 1000), (101, 50), 3, cv2.IMREAD_REDUCED_COLOR_4),       # the larger side of size counts
    ((800, 1000), (224, 224), 1, cv2.IMREAD_REDUCED_GRAYSCALE_2),
    ((800, 1000), (401, 401), 3, cv2.IMREAD_COLOR),
    ((800, 1000), None, 1, cv2.IMREAD_GRAYSCALE),
])
def test_jpeg_reduction_keeps_both_sides_at_least_the_target(tmp_path, monkeypatch, stored, size, channels, flag):
    path = imwrite(tmp_path / "a.jpg", np.full((*stored, 3), 128, np.uint8))
    flags = []
    real = images_module.cv2.imdecode
    monkeypatch.setattr(images_module.cv2, "imdecode", lambda data, f: flags.append(f) or real(data, f))
    image = read_image(path, size, channels)
    assert flags == [flag]
    assert image.shape == (*(size or stored), channels)


# ----------------------------------------------------------------------------- EXIF orientation


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured(tmp_path, fmt, orientation):
    Image = pil_image()
    from PIL import ImageOps

    pattern = np.zeros((16, 24, 3), np.uint8)  # four blocks of distinct colours: no symmetry
    pattern[:8, :8], pattern[:8, 8:] = (255, 0, 0), (0, 255, 0)
    pattern[8:, :16], pattern[8:, 16:] = (0, 0, 255), (255, 255, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    options = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(pattern).save(path, fmt, exif=exif.tobytes(), **options)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert expected.shape == ((24, 16, 3) if orientation >= 5 else (16, 24, 3))
    image = read_image(str(path))
    assert image.shape == expected.shape
    np.testing.assert_allclose(image, expected, atol=12 if fmt == "JPEG" else 0)
    # Also at a reduced size, where a JPEG is decoded at a smaller scale.
    small = read_image(str(path), (expected.shape[0] // 2, expected.shape[1] // 2))
    np.testing.assert_allclose(small[1, 1], expected[2, 2], atol=12 if fmt == "JPEG" else 0)


def test_exif_orientation_without_pil(tmp_path):
    # A hand-made EXIF block (big-endian TIFF, one IFD entry: Orientation = 6, rotate 90 clockwise).
    bgr = np.zeros((16, 32, 3), np.uint8)
    bgr[:, :16] = (0, 0, 255)  # left half red
    data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    tiff = b"MM\0*\0\0\0\x08" + b"\0\x01" + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\0\0\0\0"
    app1 = b"Exif\0\0" + tiff
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + data[2:])
    image = read_image(str(path))
    assert image.shape == (32, 16, 3)
    np.testing.assert_allclose(image[4, 8], [255, 0, 0], atol=8)   # the red half is now on top
    np.testing.assert_allclose(image[28, 8], [0, 0, 0], atol=8)


# ----------------------------------------------------------------------------- before training


def _training_config(root, classes_per_batch, cache):
    from embedding_net.config.loading import load_config

    return load_config(None, [f"data.root={root}", f"data.classes_per_batch={classes_per_batch}",
                              "data.images_per_class=2", f"data.cache={cache}", "train.verbose=0"])


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_fewer_than_two_usable_classes_fails_before_training(tmp_path, cache):
    from embedding_net.training.data import check_batch, load_split

    root = tmp_path / "data"
    good_class(root / "train", "a", 3)
    good_class(root / "train", "b", 1)
    (root / "train" / "b" / "broken.png").write_bytes(b"")
    (root / "train" / "c").mkdir()
    config = _training_config(root, 2, cache)
    with pytest.warns(UserWarning) as record:
        folder, _ = load_split(config, "train")
    assert len(record) == 3  # empty folder, unreadable file, class left with one image
    with pytest.raises(DatasetError) as info:
        check_batch(config, folder, "train")
    assert str(info.value) == f"{root / 'train'}: fewer than 2 usable classes; nothing to learn from"


def test_fewer_classes_than_p_fails_before_training(tmp_path):
    from embedding_net.training.data import check_batch, load_split

    root = tmp_path / "data"
    for name in ("a", "b", "c"):
        good_class(root / "train", name, 2)
    good_class(root / "train", "d", 1)
    config = _training_config(root, 4, "memory")
    with pytest.warns(UserWarning, match="excluded 1 class"):
        folder, _ = load_split(config, "train")
    with pytest.raises(ConfigError) as info:
        check_batch(config, folder, "train")
    assert str(info.value) == ("data.classes_per_batch must be at most the 3 usable classes of the train "
                               "split, received: 4")


def test_the_whole_matrix_in_one_folder_still_trains(tmp_path):
    """Every case of the issue in one split: three warnings, and P x K batches of what is left."""
    from embedding_net.training.data import batches, check_batch, load_split

    Image = pil_image()
    train = tmp_path / "data" / "train"
    good_class(train, "plain", 3)
    (train / "plain" / "zero.jpg").write_bytes(b"")
    (train / "plain" / "truncated.jpg").write_bytes(jpeg_bytes()[:500])
    (train / "plain" / "text.jpg").write_text("not an image")
    (train / "plain" / ".DS_Store").write_bytes(b"\0")
    (train / "plain" / "Thumbs.db").write_bytes(b"\0")
    good_class(train, "single", 1)
    (train / "empty").mkdir()
    good_class(train / "nested", "sub", 2)
    imwrite(train / "ñandú" / "日本.png", np.full((5, 5, 3), 1, np.uint8))
    imwrite(train / "ñandú" / "16bit.png", np.full((5, 5, 3), 40000, np.uint16))
    imwrite(train / "formats" / "rgba.png", np.full((5, 5, 4), 200, np.uint8))
    imwrite(train / "formats" / "gray.png", np.full((5, 5), 60, np.uint8))
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).convert("CMYK").save(train / "formats" / "cmyk.jpg")
    imwrite(train / "formats" / "big.png", np.zeros((10000, 10000), np.uint8))
    config = _training_config(tmp_path / "data", 3, "memory")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        folder, images = load_split(config, "train")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 3, messages
    assert messages[0].startswith("excluded 2 class folder(s)") and messages[0].endswith(": empty, nested")
    assert messages[1].startswith("skipped 3 unreadable image(s)")
    for name in ("text.jpg (not an image", "truncated.jpg (truncated JPEG", "zero.jpg (empty file)"):
        assert name in messages[1]
    assert messages[2].endswith("with fewer than 2 readable images: single (1)")
    assert folder.class_names == ["formats", "plain", "ñandú"]
    np.testing.assert_array_equal(folder.class_counts(), [4, 3, 2])
    assert images.shape == (9, 28, 28, 1) and images.dtype == np.uint8
    check_batch(config, folder, "train")
    batch_images, batch_labels = next(iter(batches(config, folder, images, seed=0)))
    assert batch_images.shape == (6, 28, 28, 1) and sorted(set(np.asarray(batch_labels).tolist())) == [0, 1, 2]
