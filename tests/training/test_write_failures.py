"""Issue #18, fault injection: a disk that fills up while the model, a checkpoint, the encodings
or their index is being saved. The write fails with "No space left on device" (ENOSPC) where a
full disk fails it (the temporary file's own writes, or the rename into place); the previous
file must stay byte for byte, no temporary may be left behind, and the error is one line naming
the file (a `WriteError`, which the scripts print instead of a traceback)."""

import errno
import os

import numpy as np
import pytest

from embedding_net.atomic import atomic_write_text
from embedding_net.errors import UserError, WriteError
from fuzzing import assert_one_line
from helpers import tiny_overrides

FULL = "/dev/full"  # Linux's device whose every write fails with ENOSPC


class FullDisk:
    """Fails the atomic writes into one folder: `after` writes succeed, then every other fails.

    "write": the temporary file `atomic_path` made is swapped, right after it sets its mode, for
    a link to /dev/full, so the writer's own write, flush or close fails as on a full disk (the
    link, not the device, is what the failed write then removes). "rename": `os.replace` onto
    the target fails with ENOSPC, as a directory that cannot grow does.
    """

    def __init__(self, monkeypatch, how):
        self.how, self.folder, self.after, self.writes, self.failed = how, None, 0, 0, 0
        chmod, replace = os.chmod, os.replace

        def hooked_chmod(path, mode, *args, **kwargs):
            chmod(path, mode, *args, **kwargs)
            if self.how == "write" and os.path.isfile(path) and self._due(path):
                os.remove(path)
                os.symlink(FULL, path)

        def hooked_replace(source, target, *args, **kwargs):
            if self.how == "rename" and self._due(source):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), target)
            return replace(source, target, *args, **kwargs)

        monkeypatch.setattr(os, "chmod", hooked_chmod)
        monkeypatch.setattr(os, "replace", hooked_replace)

    def arm(self, folder, after=0):
        self.folder, self.after, self.writes = os.path.abspath(folder), after, 0

    def _due(self, path):
        if self.folder is None or os.path.dirname(os.path.abspath(path)) != self.folder:
            return False
        self.writes += 1
        if self.writes <= self.after:
            return False
        self.failed += 1
        return True


@pytest.fixture(params=["write", "rename"])
def full_disk(request, monkeypatch):
    if request.param == "write" and not os.path.exists(FULL):
        pytest.skip("no /dev/full here")
    disk = FullDisk(monkeypatch, request.param)
    yield disk
    assert disk.failed, "the fault was never injected: atomic_path no longer writes as this test assumes"


def _model(seed):
    import keras

    from embedding_net.models import build_embedding_model

    keras.utils.set_random_seed(seed)
    return build_embedding_model("conv4", (28, 28, 1), 8)


def _encodings(seed):
    from embedding_net.inference.encodings import make_encodings

    rng = np.random.default_rng(seed)
    return make_encodings(rng.standard_normal((6, 4)), [0, 0, 1, 1, 2, 2], ["a", "b", "c"],
                          [f"{i}.png" for i in range(6)], {"distance": "euclidean"})


def _save_model(path, seed):
    from embedding_net.training.callbacks import save_model_atomically

    save_model_atomically(_model(seed), path)


def _save_encodings(path, seed):
    from embedding_net.inference.encodings import save_encodings

    save_encodings(path, _encodings(seed))


def _save_index(path, seed):
    from embedding_net.inference.gallery import save_encodings_index

    save_encodings_index(path, _encodings(seed))


def _save_text(path, seed):
    atomic_write_text(path, f"written with seed {seed}\n")


WRITERS = {"model.keras": _save_model, "encodings.npz": _save_encodings, "encodings.enidx": _save_index,
           "config.yml": _save_text}


def _contents(folder):
    """Every file under `folder` (temporaries and lock files included) -> its bytes."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(parent, name), "rb") as handle:
                found[os.path.relpath(os.path.join(parent, name), folder)] = handle.read()
    return found


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_full_disk_keeps_the_previous_file_and_says_so_in_one_line(tmp_path, full_disk, name):
    path = str(tmp_path / name)
    WRITERS[name](path, seed=0)
    before = _contents(tmp_path)
    full_disk.arm(tmp_path)
    with pytest.raises(WriteError) as info:
        WRITERS[name](path, seed=1)
    assert isinstance(info.value, UserError) and isinstance(info.value, OSError)
    assert_one_line(str(info.value), path, "No space left on device", "the previous file is kept")
    assert _contents(tmp_path) == before  # the same files, byte for byte: no temporary left


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_full_disk_before_the_first_write_leaves_nothing(tmp_path, full_disk, name):
    full_disk.arm(tmp_path)
    with pytest.raises(WriteError) as info:
        WRITERS[name](str(tmp_path / name), seed=0)
    assert_one_line(str(info.value), str(tmp_path / name), "nothing was written")
    assert {p for p in _contents(tmp_path) if not p.endswith(".lock")} == set()


def test_a_full_disk_at_a_checkpoint_keeps_both_checkpoints(tmp_path, full_disk):
    from embedding_net.training.callbacks import AtomicCheckpoint

    model = _model(0)
    checkpoint = AtomicCheckpoint(str(tmp_path / "last.keras"), str(tmp_path / "best.keras"), saved_model=model)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0, "val_loss": 1.0})
    before = _contents(tmp_path)
    assert set(before) == {"last.keras", "best.keras"}
    model.set_weights([w + 1 for w in model.get_weights()])
    full_disk.arm(tmp_path)
    with pytest.raises(WriteError) as info:
        checkpoint.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.5})
    assert_one_line(str(info.value), str(tmp_path / "last.keras"), "the previous file is kept")
    assert _contents(tmp_path) == before


def test_train_py_reports_a_full_disk_in_one_line_and_keeps_the_first_checkpoint(
        omniglot_subset, tmp_path, full_disk, capsys):
    """The command, in-process: epoch 1's checkpoints are written, epoch 2's last.keras fails."""
    from embedding_net.cli import main

    checkpoints = tmp_path / "full" / "checkpoints"
    full_disk.arm(checkpoints, after=2)  # epoch 1: last.keras and best.keras
    kept = {}
    real_due = full_disk._due

    def due(path):  # what the checkpoint held just before the failed write
        failing = real_due(path)
        if failing and not kept:  # (less the temporary being written aside)
            kept.update({name: data for name, data in _contents(checkpoints).items() if not name.startswith(".")})
        return failing

    full_disk._due = due
    overrides = tiny_overrides(omniglot_subset, tmp_path, "full")
    status = main(["train", *(f"--set={item}" for item in overrides)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert status == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert_one_line(errors[0], str(checkpoints / "last.keras"), "No space left on device", "the previous file is kept")
    assert set(kept) == {"last.keras", "best.keras"} and _contents(checkpoints) == kept
