"""Index files: round trip, and every way a file can be wrong fails with one line naming it."""

import json
import multiprocessing
import os
import signal
import struct
import time

import numpy as np
import pytest

from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.errors import IndexFileError
from embedding_net.index.registry import list_backends
from embedding_net.index.files import load_index, read_manifest, save_index
from embedding_net.index import container
from tests.index.conftest import clustered, perturbed

MODEL = "ab" * 32


def small_index(backend="exact", n=400, distance="euclidean"):
    vectors, labels = clustered(n=n, dimension=16, classes=20)
    return EmbeddingIndex.build(vectors, labels, [f"c{i}" for i in range(20)],
                                [f"img/{i}.png" for i in range(n)], distance=distance,
                                backend=backend), vectors


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("backend", list_backends())
def test_round_trip(tmp_path, backend, mmap):
    index, vectors = small_index(backend, distance="cosine")
    index.remove_class("c3")
    path = str(tmp_path / "gallery.enidx")
    save_index(index, path, model_sha256=MODEL)
    loaded = load_index(path, expect_model_sha256=MODEL, expect_dimension=16,
                        expect_distance="cosine", mmap=mmap)
    assert (loaded.backend, loaded.distance, loaded.dimension) == (backend, "cosine", 16)
    assert loaded.class_names == index.class_names and loaded.paths == index.paths
    assert np.array_equal(loaded.labels, index.labels) and loaded.count == index.count
    queries = perturbed(vectors, 20)
    for a, b in zip(loaded.search(queries, 7), index.search(queries, 7)):
        np.testing.assert_array_equal(a, b)
    manifest = read_manifest(path)
    assert manifest["model_sha256"] == MODEL and manifest["format_version"] == 1
    assert manifest["count"] == index.count and manifest["class_names"] == list(index.class_names)
    assert all(len(entry["sha256"]) == 64 for entry in manifest["blobs"].values())
    loaded.add(vectors[:3], ["c0", "new", "new"], ["x", "y", "z"])  # a loaded index grows
    assert loaded.count == index.count + 3 and loaded.class_names[-1] == "new"


def test_exact_vectors_are_memory_mapped(tmp_path):
    index, _ = small_index()
    path = str(tmp_path / "g.enidx")
    save_index(index, path)
    assert isinstance(load_index(path)._backend._segments[0], np.memmap)
    assert not isinstance(load_index(path, mmap=False)._backend._segments[0], np.memmap)


@pytest.fixture()
def saved(tmp_path):
    path = str(tmp_path / "gallery.enidx")
    save_index(small_index()[0], path, model_sha256=MODEL)
    return path


def expect_error(path, pattern, **kwargs):
    with pytest.raises(IndexFileError) as error:
        load_index(path, **kwargs)
    message = str(error.value)
    assert "\n" not in message and path in message
    assert pattern in message, message


def test_corrupted_byte_is_a_checksum_mismatch(saved):
    entry = read_manifest(saved)["blobs"]["backend.vectors"]
    with open(saved, "r+b") as handle:
        handle.seek(entry["offset"] + 100)
        byte = handle.read(1)
        handle.seek(entry["offset"] + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    expect_error(saved, "checksum mismatch in blob 'backend.vectors'")
    load_index(saved, verify=False)  # the check is what caught it


def test_corrupted_manifest_and_truncation(saved):
    size = os.path.getsize(saved)
    with open(saved, "r+b") as handle:
        handle.truncate(size - 1000)
    expect_error(saved, "truncated")
    with open(saved, "wb") as handle:
        handle.write(b"")
    expect_error(saved, "not an embedding_net index file")


def test_manifest_checksum(saved):
    offset = struct.unpack("<Q", open(saved, "rb").read()[-56:-48])[0]
    with open(saved, "r+b") as handle:
        handle.seek(offset + 2)
        handle.write(b"X")
    expect_error(saved, "manifest checksum mismatch")


def test_wrong_version_and_missing_file(saved, tmp_path):
    with open(saved, "r+b") as handle:
        handle.seek(8)
        handle.write(struct.pack("<I", 99))
    expect_error(saved, "format version 99")
    expect_error(str(tmp_path / "nothing.enidx"), "no such file")


def test_model_dimension_distance_mismatch(saved):
    expect_error(saved, "made by model abababababab, not by the given model cdcd",
                 expect_model_sha256="cd" * 32)
    expect_error(saved, "holds 16-dimensional embeddings, the model makes 64",
                 expect_dimension=64)
    expect_error(saved, "built for distance 'euclidean', not 'cosine'", expect_distance="cosine")
    load_index(saved, expect_model_sha256=MODEL, expect_dimension=16, expect_distance="euclidean")


def test_failed_write_leaves_old_index(saved, monkeypatch):
    before = load_index(saved).count

    def crash(handle, value):
        handle.write(b"partial data")
        raise OSError("disk full")

    monkeypatch.setattr(container, "_write_blob", crash)
    with pytest.raises(OSError, match="disk full"):
        save_index(small_index(n=100)[0], saved)
    assert load_index(saved).count == before
    assert sorted(os.listdir(os.path.dirname(saved))) == ["gallery.enidx", "gallery.enidx.lock"]


def _save_slowly(path, started):
    index = small_index(n=200)[0]
    blobs = index._backend.blobs

    def slow_blobs():
        def stall(write):
            write(b"x" * 5000)
            started.set()
            time.sleep(60)
        return dict(blobs(), stall=stall)

    index._backend.blobs = slow_blobs
    save_index(index, path)


def test_sigkill_mid_write_leaves_old_index(saved):
    started = multiprocessing.get_context("fork").Event()
    writer = multiprocessing.get_context("fork").Process(target=_save_slowly,
                                                         args=(saved, started))
    writer.start()
    assert started.wait(30)
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    assert load_index(saved).count == 400
    assert json.loads(json.dumps(read_manifest(saved)))["stored"] == 400
