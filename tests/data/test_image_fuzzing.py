"""Issue #18: random image files, not chosen examples. Whatever a file in a data folder holds
(a valid image of any mode or size, one cut short or with flipped bytes, a header claiming
100000 x 100000 pixels, random bytes behind an image extension, nothing at all, or a folder
named like an image), `read_image` either returns uint8 pixels of the asked shape or raises
`DatasetError` with one line naming the file; never another exception, never a hang, and never
gigabytes for a header that lies (the process's peak memory is checked)."""

import io
import itertools
import os
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from embedding_net.data.folders import drop_unusable, scan_image_folder
from embedding_net.data.images import find_unreadable, read_image, read_images
from embedding_net.errors import DatasetError
from fuzzing import Tally, assert_one_line, peak_memory, reset_peak_memory, time_limit

GIB = 1 << 30
# Sizes a header may claim: ordinary, extreme aspect, under OpenCV's 2**30-pixel limit but far
# more than the data holds, and over it (OpenCV refuses those before allocating).
SIDES = st.integers(1, 48) | st.sampled_from([0, 1, 2, 3000, 16383, 30000, 65535, 100000, 2**31 - 1])


@pytest.fixture(autouse=True)
def quiet_opencv():
    """OpenCV logs every refused file to stderr; a thousand of them say nothing."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    yield
    cv2.utils.logging.setLogLevel(level)


def _exif(orientation, order):
    """A TIFF-structured EXIF block with one Orientation entry (any value, valid or not)."""
    endian = "<" if order == b"II" else ">"
    return order + struct.pack(endian + "HIHHHIHHI", 42, 8, 1, 0x0112, 3, 1, orientation & 0xFFFF, 0, 0)


@st.composite
def encoded(draw):
    """(name, bytes, whether it must load): an image OpenCV wrote, of any mode and shape, then
    perhaps cut, overwritten here and there, or given junk at its end."""
    shape = draw(st.tuples(st.integers(1, 40), st.integers(1, 40)) | st.sampled_from([(1, 1), (1, 2000), (2000, 1)]))
    channels = draw(st.sampled_from([1, 3, 4]))
    extension = draw(st.sampled_from([".png", ".jpg", ".bmp", ".webp", ".tiff", ".ppm", ".pgm", ".pbm", ".sr",
                                      ".ras", ".hdr", ".avif"]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = rng.integers(0, 256, (*shape, channels)).astype(dtype) if draw(st.booleans()) else np.full(
        (*shape, channels), draw(st.integers(0, 255)), dtype)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if extension == ".jpg" and draw(st.booleans()) else []
    try:
        ok, buffer = cv2.imencode(extension, image[:, :, 0] if channels == 1 else image, params)
    except cv2.error:
        ok = False
    if not ok:  # a mode this encoder refuses: PNG writes them all
        extension, buffer = ".png", cv2.imencode(".png", image)[1]
    data = buffer.tobytes()
    if extension == ".jpg" and draw(st.booleans()):  # an EXIF orientation, in range or not
        order = draw(st.sampled_from([b"II", b"MM"]))
        blob = b"Exif\0\0" + _exif(draw(st.integers(0, 10) | st.integers(0, 65535)), order)
        data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(blob) + 2) + blob + data[2:]
    mutation = draw(st.sampled_from(["none", "none", "cut", "flip", "append"]))
    if mutation == "cut":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif mutation == "flip":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        data = bytes(data)
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=64))
    return f"encoded{extension}", data, mutation in ("none", "append")


# Modes OpenCV does not write, written by Pillow (a dependency of matplotlib): (mode, formats).
PIL_MODES = [("CMYK", [".jpg", ".tiff"]), ("LA", [".png", ".tiff", ".webp"]), ("P", [".png", ".bmp", ".tiff"]),
             ("I;16", [".png", ".tiff"]), ("1", [".png", ".bmp", ".tiff"]), ("YCbCr", [".jpg"]),
             ("I", [".tiff"]), ("F", [".tiff"]), ("RGBA", [".tiff", ".webp"])]


@st.composite
def pillow_modes(draw):
    """An image in a mode OpenCV never writes (CMYK JPEG, grey with alpha, palette with
    transparency, 16- and 32-bit grey, float, 1-bit), whole or cut short."""
    from PIL import Image

    mode, extensions = draw(st.sampled_from(PIL_MODES))
    extension = draw(st.sampled_from(extensions))
    size = draw(st.sampled_from([(1, 1), (1, 300), (300, 1)]) | st.tuples(st.integers(1, 32), st.integers(1, 32)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    grey = rng.integers(0, 256, size[0] * size[1], np.uint8).tobytes()
    image, handle = Image.frombytes("L", size, grey).convert(mode), io.BytesIO()
    options = {"transparency": 0} if mode == "P" and extension == ".png" and draw(st.booleans()) else {}
    formats = {".jpg": "JPEG", ".tiff": "TIFF", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}
    image.save(handle, format=formats[extension], **options)
    data, whole = handle.getvalue(), draw(st.booleans())
    data = data if whole else data[:draw(st.integers(0, len(data)))]
    return f"pillow_{mode.replace(';', '')}{extension}", data, whole


def _chunk(kind, body, crc_ok=True):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) ^ (not crc_ok))


@st.composite
def png(draw):
    """A PNG built chunk by chunk: any size in the header, any bit depth and colour type (16-bit,
    grey with alpha, palette, invalid pairs), pixel data that fits, is short, or is junk, a
    palette or none, an eXIf chunk with any orientation, now and then a wrong checksum."""
    sides = SIDES if draw(st.booleans()) else st.integers(1, 48)
    width, height = draw(sides), draw(sides)
    kind = draw(st.sampled_from([0, 2, 3, 4, 6, 5]))
    depths = {0: [1, 2, 4, 8, 16], 3: [1, 2, 4, 8]}.get(kind, [8, 16])
    depth = draw(st.sampled_from(depths if draw(st.booleans()) else [1, 2, 4, 8, 16, 3]))
    samples = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(kind, 1)
    valid = 0 < width * height <= 48 * 48 and depth in depths
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, kind, 0, 0, 0))]
    if kind == 3 and draw(st.booleans()):
        chunks.append(_chunk(b"PLTE", draw(st.binary(min_size=3, max_size=768))))
    if draw(st.booleans()):
        order = draw(st.sampled_from([b"II", b"MM"]))
        exif = _exif(draw(st.integers(0, 10)), order)
        chunks.append(_chunk(b"eXIf", exif[:draw(st.integers(0, len(exif)))] if draw(st.booleans()) else exif))
    if valid and draw(st.booleans()):
        row = (width * depth * samples + 7) // 8
        pixels = draw(st.binary(min_size=height * row, max_size=height * row))
        body = b"".join(b"\0" + pixels[r * row:(r + 1) * row] for r in range(height))
        body = zlib.compress(body)
    else:
        body = draw(st.binary(max_size=256)) if draw(st.booleans()) else zlib.compress(draw(st.binary(max_size=256)))
    chunks.append(_chunk(b"IDAT", body, crc_ok=draw(st.integers(0, 9)) > 0))
    data = b"\x89PNG\r\n\x1a\n" + b"".join(chunks) + _chunk(b"IEND", b"")
    if draw(st.integers(0, 4)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return "built.png", data, False


@st.composite
def doctored_jpeg(draw):
    """A valid JPEG whose frame header now claims another size (up to 65535 x 65535)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = rng.integers(0, 256, (draw(st.integers(8, 32)), draw(st.integers(8, 32)), draw(st.sampled_from([1, 3]))))
    data = bytearray(cv2.imencode(".jpg", image.astype(np.uint8))[1].tobytes())
    frame = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, draw(SIDES) & 0xFFFF, draw(SIDES) & 0xFFFF)
    return "doctored.jpg", bytes(data), False


@st.composite
def bmp(draw):
    """A BMP header claiming any size (negative heights are top-down) and bit depth, over a few
    bytes of pixels. Uncompressed only: RLE can legitimately describe a 30000 x 30000 picture in
    a few bytes, a decompression bomb that only OpenCV's pixel limit bounds (see the report)."""
    width, height = draw(SIDES), draw(SIDES) * draw(st.sampled_from([1, -1]))
    bits = draw(st.sampled_from([1, 4, 8, 16, 24, 32, 0, 7]))
    pixels = draw(st.binary(max_size=200))
    offset = 54 + (1024 if bits <= 8 else 0)
    header = struct.pack("<IiiHHIIiiII", 40, min(width, 2**31 - 1), max(min(height, 2**31 - 1), -(2**31)), 1, bits,
                         0, len(pixels), 0, 0, 0, 0)
    data = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + header + b"\0" * (offset - 54) + pixels
    return "built.bmp", data, False


SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0", b"BM", b"RIFF\0\0\0\0WEBPVP8L",
              b"II*\0", b"MM\0*", b"P6\n", b"P5\n3 3\n65535\n", b"#?RADIANCE\n", b"\0\0\0\x0cjP  "]


@st.composite
def junk(draw):
    """Random bytes (behind a known signature or not) with an image extension, or no bytes."""
    extension = draw(st.sampled_from([".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".ppm", ".hdr", ".jp2"]))
    return f"junk{extension}", draw(st.sampled_from(SIGNATURES)) + draw(st.binary(max_size=300)), False


FILES = encoded() | pillow_modes() | png() | doctored_jpeg() | bmp() | junk() | st.just(("folder.png", None, False))
NAMES = st.sampled_from(["{}", "ünïcødé {}", "spaces and, commas {}", "日本 {}"])
SIZES = st.sampled_from([None, (8, 8), (28, 28), (1, 1), (3, 50)])


def _write(folder, name, data):
    path = os.path.join(folder, name)
    if data is None:  # a directory named like an image
        os.makedirs(path, exist_ok=True)
    else:
        with open(path, "wb") as handle:
            handle.write(data)
    return path


def _check_one(path, size, channels, must_load):
    """The property for one file; returns the outcome's name."""
    baseline = reset_peak_memory()
    with time_limit(20, f"read_image({path!r})"):
        try:
            image = read_image(path, size, channels)
        except DatasetError as error:
            assert not must_load, f"{path}: {error}"
            assert_one_line(str(error), path)
            image = None
        batch, failed = read_images([path], size or (8, 8), channels, workers=1)
    growth = peak_memory() - baseline
    assert growth < GIB, f"reading {path} raised the peak memory by {growth / GIB:.1f} GiB"
    if image is None:
        assert [p for p, _ in failed] == [path]
        return "one-line DatasetError"
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == channels, image.shape
    assert size is None or image.shape[:2] == size
    assert not failed  # read_images decodes the same way
    if size is not None:
        np.testing.assert_array_equal(batch[0], image)
    return "loaded"


def test_random_image_files_load_or_fail_with_one_line_naming_the_file(tmp_path_factory):
    folder, tally, counter = str(tmp_path_factory.mktemp("images")), Tally(), itertools.count()

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(file=FILES, name=NAMES, size=SIZES, channels=st.sampled_from([1, 3]))
    def check(file, name, size, channels):
        stem, data, must_load = file
        path = _write(folder, name.format(next(counter)) + stem, data)
        outcome = _check_one(path, size, channels, must_load)
        tally[f"{outcome} ({stem.split('.')[0].split('_')[0]})"] += 1

    for sides in [(30000, 30000), (65535, 65535), (16383, 16383)]:  # the doctored headers that cost gigabytes
        data = bytearray(cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))[1].tobytes())
        struct.pack_into(">HH", data, data.find(b"\xff\xc0") + 5, *sides)
        check = example(file=("doctored.jpg", bytes(data), False), name="{}", size=None, channels=3)(check)
    check()
    tally.report("image files")
    assert any(k.startswith("loaded") for k in tally) and any(k.startswith("one-line") for k in tally), tally


def test_random_data_folders_keep_the_readable_images_with_one_line_warnings(tmp_path_factory):
    """scan_image_folder -> read_images -> drop_unusable over a folder of such files: what is kept
    reads, what is dropped does not, and every warning and error is one line."""
    root, tally, images_tally, counter = tmp_path_factory.mktemp("folders"), Tally(), Tally(), itertools.count()

    @settings(max_examples=100, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(files=st.lists(st.tuples(st.integers(0, 2), FILES), min_size=1, max_size=8))
    def check(files):
        folder = str(root / f"split{next(counter)}")
        for i, (label, (stem, data, _)) in enumerate(files):
            os.makedirs(os.path.join(folder, f"class{label}"), exist_ok=True)
            _write(os.path.join(folder, f"class{label}"), f"{i}{stem}", data)
        with warnings.catch_warnings(record=True) as caught, time_limit(60, f"loading {folder}"):
            warnings.simplefilter("always")
            try:
                scanned = scan_image_folder(folder)
            except DatasetError as error:
                assert_one_line(str(error), folder)
                tally["folder refused"] += 1
                return
            images, failed = read_images(scanned.paths, (8, 8), 1, workers=2)
            assert find_unreadable(scanned.paths, workers=2) == failed
            kept, keep = drop_unusable(scanned, failed, min_images_per_class=2)
        for warning in caught:
            assert_one_line(str(warning.message))
        bad = {path for path, _ in failed}
        assert all(path not in bad for path in kept.paths)
        assert len(images[keep]) == len(kept) and all(read_image(p, (8, 8), 1) is not None for p in kept.paths)
        tally["folder read"] += 1
        images_tally["kept"] += len(kept)
        images_tally["dropped"] += len(scanned) - len(kept)

    check()
    tally.report("data folders")
    images_tally.report("images listed in them")
    assert tally["folder read"] and images_tally["kept"] and images_tally["dropped"], (tally, images_tally)
