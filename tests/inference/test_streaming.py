"""The streaming embedder: bounded batches, parts written per chunk, resumed after an interruption
without recomputing finished chunks, and a changed folder or model refused."""

import os

import numpy as np
import pytest
from fakes import FakeModel, make_folder

from embedding_net.errors import DatasetError
from embedding_net.inference.encodings import enroll_folder
from embedding_net.inference.streaming import embed_folder_streaming, embed_listing, read_part


def collected(listing, parts):
    arrays = [read_part(p) for p in parts]
    return (np.concatenate([a[0] for a in arrays]), np.concatenate([a[1] for a in arrays]),
            [p for a in arrays for p in a[2]])


def test_interrupted_run_resumes_from_the_last_finished_chunk(tmp_path):
    folder = make_folder(tmp_path / "folder", classes=4, per_class=10)  # 40 images: chunks of 8
    whole = FakeModel()
    listing, parts = embed_folder_streaming(whole, folder, str(tmp_path / "a.parts"), batch_size=4, chunk_size=8)
    assert whole.calls == 10 and len(parts) == 5
    interrupted = FakeModel(fail_at=6)  # batches 1-5 done: chunks 0 and 1 written, chunk 2 half done
    with pytest.raises(KeyboardInterrupt):
        embed_folder_streaming(interrupted, folder, str(tmp_path / "b.parts"), batch_size=4, chunk_size=8)
    assert sorted(os.listdir(tmp_path / "b.parts")) == ["manifest.json", "part-000000.npz", "part-000001.npz"]
    resumed = FakeModel()
    _, resumed_parts = embed_folder_streaming(resumed, folder, str(tmp_path / "b.parts"), batch_size=4, chunk_size=8)
    assert resumed.images == 24 and resumed.calls == 6  # only chunks 2, 3, 4
    got, want = collected(listing, resumed_parts), collected(listing, parts)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2] == listing.paths
    reference = enroll_folder(FakeModel(), folder)  # the in-memory enrolment gives the same vectors
    np.testing.assert_allclose(got[0], reference.embeddings, atol=1e-6)


def test_a_changed_folder_or_model_is_refused(tmp_path):
    folder = make_folder(tmp_path / "folder", classes=2, per_class=5)
    parts_dir = str(tmp_path / "x.parts")
    with pytest.raises(KeyboardInterrupt):
        embed_folder_streaming(FakeModel(fail_at=2), folder, parts_dir, batch_size=2, chunk_size=2,
                               model_sha256="a" * 64)
    with pytest.raises(DatasetError, match="model_sha256 differ"):
        embed_folder_streaming(FakeModel(), folder, parts_dir, batch_size=2, chunk_size=2, model_sha256="b" * 64)
    make_folder(tmp_path / "folder", classes=3, per_class=5)  # a class was added
    with pytest.raises(DatasetError, match="listing_sha256 differ.*delete that folder"):
        embed_folder_streaming(FakeModel(), folder, parts_dir, batch_size=2, chunk_size=2, model_sha256="a" * 64)


def test_unreadable_images_are_skipped_and_recorded(tmp_path):
    folder = make_folder(tmp_path / "folder", classes=2, per_class=3)
    open(os.path.join(folder, "class_1", "0001.png"), "w").write("not an image")
    listing, parts = embed_folder_streaming(FakeModel(), folder, str(tmp_path / "p"), batch_size=2, chunk_size=4)
    embeddings, labels, paths, failed = zip(*[read_part(p) for p in parts])
    assert sum(len(e) for e in embeddings) == 5 and len([f for fs in failed for f in fs]) == 1
    assert "0001.png" in [f for fs in failed for f in fs][0]
    in_memory, keep = embed_listing(FakeModel(), listing, batch_size=2)
    assert keep.sum() == 5 and np.allclose(in_memory, np.concatenate(embeddings))
