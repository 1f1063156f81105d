"""What "unknown" means for an enrolled gallery: the run's calibrated threshold, inherited from
the gallery train.py wrote beside the model (or one line saying there is none), and class radii
calibrated on the gallery, recalibrated when appending."""

import os

import numpy as np
import pytest
from fakes import FakeModel, make_folder

from embedding_net.index import read_manifest
from embedding_net.inference.encodings import load_encodings, make_encodings, save_encodings
from embedding_net.inference.enrolment import enroll
from embedding_net.inference.gallery import open_gallery, save_encodings_index
from embedding_net.inference.litert import file_sha256


def write_run(run, threshold=0.75, kind="enidx", other_model=False):
    """A run folder as train.py leaves it: the model file and its gallery storing `threshold`."""
    os.makedirs(run, exist_ok=True)
    weights = os.path.join(run, "model.bin")
    with open(weights, "wb") as handle:
        handle.write(b"model weights")
    encodings = make_encodings(np.eye(4, dtype=np.float32), [0, 0, 1, 1], ["a", "b"], ["1", "2", "3", "4"],
                               {"distance": "euclidean", "threshold": threshold})
    path = os.path.join(run, f"encodings.{kind}")
    if kind == "npz":
        save_encodings(path, encodings)
    else:
        save_encodings_index(path, encodings, model_sha256="0" * 64 if other_model else file_sha256(weights))
    return weights, path


def metadata_of(path):
    return read_manifest(path)["metadata"] if path.endswith(".enidx") else load_encodings(path).metadata


@pytest.mark.parametrize("run_kind", ["enidx", "npz"])
@pytest.mark.parametrize("suffix", ["enidx", "npz"])
def test_enrolment_inherits_the_runs_threshold(tmp_path, capsys, run_kind, suffix):
    weights, source = write_run(str(tmp_path / "run"), kind=run_kind)
    output = str(tmp_path / f"new.{suffix}")
    summary = enroll(FakeModel(), weights, make_folder(tmp_path / "folder"), output, progress=False)
    metadata = metadata_of(output)
    assert summary["threshold"] == metadata["threshold"] == 0.75 and metadata["threshold_source"] == source
    assert sorted(metadata["rejection"]["radii"]) == ["class_0", "class_1", "class_2"]
    assert open_gallery(output).metadata["threshold"] == 0.75
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("other_model", [False, True])
def test_without_a_runs_threshold_enrolment_says_so_in_one_line(tmp_path, capsys, other_model):
    if other_model:  # the run's gallery records another model: its threshold is another space's
        weights, _ = write_run(str(tmp_path / "run"), other_model=True)
    else:
        weights = str(tmp_path / "model.bin")
        open(weights, "wb").write(b"model weights")
    output = str(tmp_path / "new.enidx")
    summary = enroll(FakeModel(), weights, make_folder(tmp_path / "folder"), output, progress=False)
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"note: no threshold from training beside {weights}")
    assert summary["threshold"] is None and "threshold" not in metadata_of(output)
    assert "rejection" in metadata_of(output)


def test_append_keeps_the_threshold_and_recalibrates_the_radii(tmp_path, capsys):
    weights, _ = write_run(str(tmp_path / "run"))
    output = str(tmp_path / "new.enidx")
    enroll(FakeModel(), weights, make_folder(tmp_path / "a", classes=2), output, progress=False)
    first = metadata_of(output)
    write_run(str(tmp_path / "run"), threshold=0.5)  # a later run's threshold does not replace the gallery's
    more = make_folder(tmp_path / "b", classes=3, per_class=4, seed=1)
    os.rename(os.path.join(more, "class_2"), os.path.join(more, "new_class"))
    enroll(FakeModel(), weights, more, output, append=True, progress=False)
    after = metadata_of(output)
    assert after["threshold"] == 0.75 and sorted(after["rejection"]["radii"]) == ["class_0", "class_1", "new_class"]
    assert after["rejection"]["images"] == first["rejection"]["images"] + 12
    assert capsys.readouterr().err == ""


def test_a_gallery_of_single_images_has_no_radii_and_says_unknown_needs_a_threshold(tmp_path, capsys):
    weights = str(tmp_path / "model.bin")
    open(weights, "wb").write(b"model weights")
    output = str(tmp_path / "new.npz")
    enroll(FakeModel(), weights, make_folder(tmp_path / "folder", per_class=1), output, progress=False)
    assert "rejection" not in metadata_of(output)
    assert "unless test.py gets --threshold" in capsys.readouterr().err
