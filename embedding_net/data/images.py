"""Image decoding: any file OpenCV reads -> uint8 RGB or grayscale at the model's input size.

`read_image` is the one place that decodes, for training, evaluation and `test.py` alike. Files
it cannot use raise `DatasetError` with the path and the reason: empty, truncated (a JPEG without
its end-of-image marker, which OpenCV 4.x would return half grey), not an image, or a header
claiming more pixels than OpenCV's limit (`OPENCV_IO_MAX_IMAGE_PIXELS`, 2**30 by default).
"""

import concurrent.futures
import os
import struct

import cv2
import numpy as np

from embedding_net.errors import DatasetError

# Extensions OpenCV's imread understands; other files in a class folder are ignored.
IMAGE_EXTENSIONS = frozenset(
    ".bmp .dib .jpeg .jpg .jpe .jp2 .png .webp .pbm .pgm .ppm .pxm .pnm .sr .ras .tiff .tif "
    ".exr .hdr .pic .avif".split()
)


_JPEG_REDUCED = {  # (channels, factor) -> flag: libjpeg decodes at 1/factor scale (DCT scaling)
    (1, 1): cv2.IMREAD_GRAYSCALE, (1, 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    (1, 4): cv2.IMREAD_REDUCED_GRAYSCALE_4, (1, 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
    (3, 1): cv2.IMREAD_COLOR, (3, 2): cv2.IMREAD_REDUCED_COLOR_2,
    (3, 4): cv2.IMREAD_REDUCED_COLOR_4, (3, 8): cv2.IMREAD_REDUCED_COLOR_8,
}
# A Huffman-coded JPEG spends at least one bit on each 8 x 8 block of its full-resolution
# component (the DC code; two with the end-of-block code): at most 512 pixels per byte, and
# libjpeg's smallest, a uniform image, takes 255. A header claiming far more than the file can
# hold is corrupt, and libjpeg would decode it into a grey picture of the claimed size: a
# 700-byte file with a doctored frame header became 30000 x 30000 pixels, 5 GB. 4096 leaves
# room for odd sampling factors; arithmetic-coded frames (rare) are not bounded this way.
_JPEG_PIXELS_PER_BYTE = 4096
# Stored pixels -> upright, per EXIF orientation value (2-8; 1 is upright).
_ORIENT = {
    2: lambda im: cv2.flip(im, 1), 3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
    4: lambda im: cv2.flip(im, 0), 5: cv2.transpose,
    6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
    7: lambda im: cv2.rotate(cv2.transpose(im), cv2.ROTATE_180),
    8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _jpeg_frame(data):
    """`(height, width)` of a JPEG from its frame header (None if not found before the scan).

    Raises ValueError for a truncated file: no end-of-image marker after the first scan. OpenCV
    4.x decodes such a file into a half-grey picture without error (libjpeg only warns). Also
    for a Huffman-coded frame claiming more pixels than the file can hold (see above).
    """
    size, i = None, 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return size  # not a marker: corrupt, left to the decoder
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = (data[i + 2] << 8) | data[i + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and i + 9 <= len(data):
            size = struct.unpack_from(">HH", data, i + 5)
            if marker < 0xC8 and size[0] * size[1] > _JPEG_PIXELS_PER_BYTE * len(data):
                raise ValueError(f"corrupt JPEG (its header claims {size[1]} x {size[0]} pixels, "
                                 f"more than {len(data)} bytes can hold)")
        if marker == 0xDA:  # start of scan; in entropy-coded data 0xFF is always escaped
            if data.find(b"\xff\xd9", i + 2 + length) < 0:
                raise ValueError("truncated JPEG (no end-of-image marker)")
            return size
        if marker == 0xD9:
            raise ValueError("JPEG without image data (ends before its first scan)")
        i += 2 + length
    raise ValueError("truncated JPEG (ends before its image data)")


def _exif_orientation(types, blobs):
    """The EXIF orientation (1-8) in the metadata of `cv2.imdecodeWithMetadata`, 1 if none."""
    for kind, blob in zip(types, blobs):
        if kind != cv2.IMAGE_METADATA_EXIF:
            continue
        exif = np.asarray(blob, np.uint8).tobytes()
        exif = exif[6:] if exif.startswith(b"Exif\0\0") else exif
        try:
            order = {b"II": "<", b"MM": ">"}[exif[:2]]
            (offset,) = struct.unpack_from(order + "I", exif, 4)
            (count,) = struct.unpack_from(order + "H", exif, offset)
            for entry in range(offset + 2, offset + 2 + 12 * count, 12):
                tag, kind, _ = struct.unpack_from(order + "HHI", exif, entry)
                if tag == 0x0112 and kind == 3:  # Orientation, SHORT
                    value = struct.unpack_from(order + "H", exif, entry + 8)[0]
                    return value if 1 <= value <= 8 else 1
        except (KeyError, struct.error):
            pass
    return 1


def _decode(data, size, channels):
    """Decodes bytes to an upright array (BGR, BGRA or grayscale; any depth), or None."""
    buffer = np.frombuffer(data, np.uint8)
    if data[:3] == b"\xff\xd8\xff":  # JPEG: OpenCV applies the orientation itself
        frame = _jpeg_frame(data)
        factor = 1
        if size is not None and frame is not None:
            factor = next((f for f in (8, 4, 2) if min(frame) // f >= max(size)), 1)
        return cv2.imdecode(buffer, _JPEG_REDUCED[1 if channels == 1 else 3, factor])
    # IMREAD_UNCHANGED keeps 16 bits and alpha, and ignores the orientation: applied here.
    if not hasattr(cv2, "imdecodeWithMetadata"):  # OpenCV < 4.12: stored orientation
        return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    image, types, blobs = cv2.imdecodeWithMetadata(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    orientation = _exif_orientation(types, blobs)
    return image if orientation == 1 else _ORIENT[orientation](image)


def _to_uint8(image):
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    image = image.astype(np.float32)
    if image.max() <= 1.0:  # float images (EXR, HDR) are usually in [0, 1]
        image = image * 255.0
    return np.clip(image, 0, 255).astype(np.uint8)


def _over_white(bgra):
    """Composites over a white background, as viewers show transparency (uint8 arithmetic)."""
    alpha = cv2.merge([bgra[:, :, 3]] * 3)
    return cv2.add(cv2.multiply(bgra[:, :, :3], alpha, scale=1 / 255), 255 - alpha)


def _to_channels(image, channels):
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if channels == 1:
        return (image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))[:, :, None]
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path, size=None, channels=3):
    """Reads an image as uint8 [height, width, channels], RGB or grayscale, upright.

    EXIF orientation is honoured (as cameras and viewers do): for JPEG by OpenCV, for PNG and
    WebP here (needs OpenCV >= 4.12). A JPEG much larger than `size` is decoded at 1/2, 1/4 or
    1/8 scale by libjpeg (the largest that keeps both sides at least `max(size)`): a 10000 x 10000
    photo for a 224 x 224 model costs 5 MB instead of 300 MB. 16-bit images keep their high byte;
    transparency is composited over white.

    Args:
        path: any file OpenCV decodes; non-ASCII paths work.
        size: `(height, width)` to resize to (area interpolation when shrinking), or None.
        channels: 1 (grayscale) or 3 (RGB).

    Raises:
        DatasetError: the file is missing, empty, truncated or not a readable image.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DatasetError(f"cannot read image {path}: {error.strerror or error}") from None
    if not data:
        raise DatasetError(f"cannot read image {path}: empty file")
    try:
        image = _decode(data, size, channels)
    except ValueError as error:
        raise DatasetError(f"cannot read image {path}: {error}") from None
    except cv2.error as error:  # e.g. a header claiming more than OpenCV's pixel limit
        reason = str(error).strip().splitlines()[-1].split(" error: ")[-1]
        raise DatasetError(f"cannot read image {path}: OpenCV refused it: {reason}") from None
    if image is None or image.size == 0:
        raise DatasetError(f"cannot read image {path}: not an image OpenCV can decode")
    return _as_model_sees(image, size, channels)


def _as_model_sees(image, size, channels):
    """A decoded image (BGR, BGRA or grayscale; any depth) -> uint8 [height, width, channels]:
    depth to 8 bits, transparency over white, resized, then to the channels asked for."""
    image = _to_uint8(image)
    if image.ndim == 3 and image.shape[2] == 4:
        image = _over_white(image)
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        height, width = size
        shrinking = height * width < image.shape[0] * image.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (width, height), interpolation=interpolation)
    return _to_channels(image, channels)


def prepare_image(image, size=None, channels=3):
    """An image array as the model sees it: what `read_image` gives for a file holding it.

    Every way in (train.py's batches, test.py, the `Classifier`) resizes this one way, because
    the answer depends on it: the same Omniglot drawing is 0.0005 from itself resized with
    INTER_AREA and 0.446 with `cv2.resize`'s default (bilinear) interpolation.

    Args:
        image: [H, W] grayscale, or [H, W, 1 | 3 | 4] grayscale, RGB or RGBA (the channel order
            of PIL, matplotlib and scikit-image, not OpenCV's BGR); uint8, uint16 (the high byte
            is kept) or float in [0, 1]; any size.
        size: `(height, width)` to resize to (area interpolation when shrinking), or None.
        channels: 1 (grayscale) or 3 (RGB).

    Raises:
        ValueError: an array that is not an image, echoing its shape and dtype.
    """
    image = np.asarray(image)
    if (image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)) or 0 in image.shape
            or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating))):
        raise ValueError("an image must be [H, W] or [H, W, 1|3|4] of integers or floats. "
                         f"Received: shape {image.shape}, dtype {image.dtype}")
    if np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)  # OpenCV's colour conversions take no float64
    elif image.dtype not in (np.uint8, np.uint16):
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (3, 4):  # to OpenCV's order, as a decoded file is
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    return _as_model_sees(image, size, channels)


def read_images(paths, size, channels, workers=None, progress=False):
    """Reads many images in parallel threads (OpenCV releases the GIL while decoding).

    Returns:
        `(images, failed)`: uint8 [N, height, width, channels] with zeros where a file failed,
        and the sorted list of `(path, reason)` that failed.
    """
    images = np.zeros((len(paths), size[0], size[1], channels), np.uint8)
    failed = []

    def read(index):
        try:
            images[index] = read_image(paths[index], size, channels)
        except DatasetError as error:
            failed.append((paths[index], str(error)))

    workers = workers or min(16, (os.cpu_count() or 1) * 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        iterator = pool.map(read, range(len(paths)))
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, total=len(paths), desc="reading images", unit="img", leave=False)
        for _ in iterator:
            pass
    return images, sorted(failed)


def find_unreadable(paths, workers=None, progress=False):
    """The sorted `(path, reason)` of the files `read_image` refuses, found by decoding each one
    at a tiny size (JPEGs at 1/8 scale), for datasets decoded batch by batch: unlike
    `cv2.haveImageReader`, which reads the signature only, it finds truncated and corrupt files."""
    return read_images(paths, (8, 8), 1, workers, progress)[1]
