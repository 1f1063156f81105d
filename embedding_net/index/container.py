"""The index file: one self-checking binary file, written atomically. No pickle anywhere.

Why one file and not a folder: `os.replace` swaps one file atomically, but no call swaps a
non-empty folder, so a folder would need a rename dance with a moment where no index exists. One
file is also one thing to copy, and its checksums cover all of it. Layout::

    [0, 16)       header: magic b"ENIDX\\x00\\r\\n", uint32 format version, 4 zero bytes
    [4096, ...)   blobs, each at a 4096-byte (page) boundary, so arrays can be memory-mapped
    [m, m + n)    manifest: UTF-8 JSON, listing each blob's offset, length, SHA-256, dtype, shape
    last 56 bytes trailer: uint64 m, uint64 n, SHA-256 of the manifest, magic b"ENIDXEND"

The manifest comes last because blob checksums are known only once the blobs are written. A
file cut short loses its trailer, so truncation is caught before anything else is trusted; the
manifest's own checksum is in the trailer, every blob's in the manifest (arrays are raw
little-endian C-order data, described by dtype and shape, and read with `np.memmap` / `np.fromfile`,
never `np.load(allow_pickle=True)`). Writing goes to a temporary file in the same folder, fsynced
and then renamed over the old file (`embedding_net.atomic.atomic_path`): a crash (even SIGKILL)
at any moment leaves the previous index whole.
"""

import contextlib
import hashlib
import json
import mmap as mmap_module
import os
import struct

import numpy as np

from embedding_net.atomic import atomic_path
from embedding_net.index.errors import IndexFileError, file_error

FORMAT_VERSION = 1
MAGIC, END_MAGIC = b"ENIDX\x00\r\n", b"ENIDXEND"
_HEADER = struct.Struct("<8sI4x")
_TRAILER = struct.Struct("<QQ32s8s")
_ALIGN, _PIECE = 4096, 1 << 24


def write_container(path, manifest, blobs):
    """Writes `manifest` (a JSON-able dict) and `blobs` to `path` atomically.

    `blobs` maps names to: a NumPy array, a list of arrays of one dtype (written back to back as
    one array, without concatenating them in memory), bytes-like, or a callable that receives a
    `write(bytes)` function (to stream a serialiser without holding its output).
    """
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        handle.write(_HEADER.pack(MAGIC, FORMAT_VERSION))
        entries = {}
        for name, value in blobs.items():
            handle.write(b"\0" * (-handle.tell() % _ALIGN))
            entries[name] = _write_blob(handle, value)
        payload = json.dumps(dict(manifest, format_version=FORMAT_VERSION, blobs=entries),
                             ensure_ascii=False, sort_keys=True).encode("utf-8")
        offset = handle.tell()
        handle.write(payload)
        handle.write(_TRAILER.pack(offset, len(payload), hashlib.sha256(payload).digest(),
                                   END_MAGIC))
        handle.flush()
        os.fsync(handle.fileno())


def _write_blob(handle, value):
    offset, digest, entry = handle.tell(), hashlib.sha256(), {}

    def write(data):
        handle.write(data)
        digest.update(data)

    if callable(value):
        value(write)
    elif isinstance(value, (np.ndarray, list)):
        arrays = [np.asarray(a) for a in (value if isinstance(value, list) else [value])]
        dtype = np.dtype(arrays[0].dtype if arrays else np.float32).newbyteorder("<")
        rows = sum(len(a) for a in arrays)
        tail = tuple(arrays[0].shape[1:]) if arrays else ()
        for array in arrays:
            step = max(1, _PIECE // max(1, array[:1].nbytes))
            for begin in range(0, len(array), step):
                write(np.ascontiguousarray(array[begin : begin + step], dtype=dtype).data)
        entry = {"dtype": dtype.str, "shape": [rows, *tail]}
    else:
        write(memoryview(value).cast("B"))
    return dict(entry, offset=offset, length=handle.tell() - offset, sha256=digest.hexdigest())


class Blobs:
    """Access to the blobs of an opened index file, by name (see `read_container`)."""

    def __init__(self, path, entries):
        self.path, self.entries, self._map = path, entries, None

    def array(self, name, mmap=True):
        """The array blob `name`: a read-only memory map, or a copy in memory."""
        entry = self.entries[name]
        dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
        if int(np.prod(shape)) * dtype.itemsize != entry["length"]:
            raise file_error(self.path, f"blob {name!r} does not match its shape {shape}")
        if mmap and entry["length"]:
            return np.memmap(self.path, dtype=dtype, mode="r", offset=entry["offset"], shape=shape)
        with open(self.path, "rb") as handle:
            handle.seek(entry["offset"])
            return np.fromfile(handle, dtype=dtype, count=int(np.prod(shape))).reshape(shape)

    def bytes(self, name):
        """The blob `name` as bytes (small blobs: paths, JSON)."""
        entry = self.entries[name]
        with open(self.path, "rb") as handle:
            handle.seek(entry["offset"])
            return handle.read(entry["length"])

    @contextlib.contextmanager
    def reader(self, name):
        """A binary file positioned at blob `name` whose `read(n)` stops at the blob's end."""
        entry = self.entries[name]
        with open(self.path, "rb") as handle:
            handle.seek(entry["offset"])
            left = [entry["length"]]

            class _Slice:
                def read(self, size=-1):
                    size = left[0] if size is None or size < 0 else min(size, left[0])
                    data = handle.read(size)
                    left[0] -= len(data)
                    return data

            yield _Slice()

    def buffer(self, name):
        """A read-only memoryview of blob `name` over a memory map of the file (kept open)."""
        if self._map is None:
            with open(self.path, "rb") as handle:
                self._map = mmap_module.mmap(handle.fileno(), 0, access=mmap_module.ACCESS_READ)
        entry = self.entries[name]
        return memoryview(self._map)[entry["offset"] : entry["offset"] + entry["length"]]


def read_container(path, verify=True):
    """(manifest dict, `Blobs`) of the index file at `path`, or an `IndexFileError` naming it.

    Checks the header, the trailer (truncation), the manifest checksum and, with `verify`, the
    SHA-256 of every blob (one sequential read of the file).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            header = handle.read(_HEADER.size)
            if size < _HEADER.size + _TRAILER.size or header[:8] != MAGIC:
                raise file_error(path, "not an embedding_net index file (no index header)")
            version = _HEADER.unpack(header)[1]
            if version != FORMAT_VERSION:
                raise file_error(path, f"index format version {version}; this embedding_net "
                                       f"reads version {FORMAT_VERSION}: rebuild the index")
            handle.seek(size - _TRAILER.size)
            offset, length, checksum, end = _TRAILER.unpack(handle.read(_TRAILER.size))
            if end != END_MAGIC or offset + length + _TRAILER.size != size:
                raise file_error(path, "truncated or damaged (no end marker): the file was cut "
                                       "short or its write did not finish")
            handle.seek(offset)
            payload = handle.read(length)
            if hashlib.sha256(payload).digest() != checksum:
                raise file_error(path, "manifest checksum mismatch: the file is corrupted")
            manifest = json.loads(payload.decode("utf-8"))
            entries = manifest["blobs"]
            for name, entry in entries.items():
                if entry["offset"] < _HEADER.size or entry["offset"] + entry["length"] > offset:
                    raise file_error(path, f"blob {name!r} lies outside the file")
                if verify and _digest(handle, entry) != entry["sha256"]:
                    raise file_error(path, f"checksum mismatch in blob {name!r}: the file is "
                                           "corrupted")
    except IndexFileError:
        raise
    except FileNotFoundError:
        raise file_error(path, "no such file") from None
    except (OSError, ValueError, KeyError, TypeError, struct.error) as error:
        raise file_error(path, f"unreadable ({type(error).__name__}: {error})") from None
    return manifest, Blobs(path, entries)


def _digest(handle, entry):
    digest, left = hashlib.sha256(), entry["length"]
    handle.seek(entry["offset"])
    while left > 0:
        data = handle.read(min(left, _PIECE))
        if not data:
            break
        digest.update(data)
        left -= len(data)
    return digest.hexdigest()
