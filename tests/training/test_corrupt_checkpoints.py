"""Issue #18, fault injection: an interrupted run whose checkpoints or backup were then damaged
(a torn copy, a disk error, a file overwritten). The same command, run again, resumes from the
backup state that can still be read, or starts over, saying so in one line; never a traceback,
and history.csv ends with one row per epoch either way."""

import csv
import os
import shutil
import subprocess
import sys

import pytest

from fuzzing import assert_one_line
from helpers import tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAME = "damaged"

# train.py, stopped at once (os._exit: nothing flushed or cleaned up, as by SIGKILL) after the
# backup of its second epoch: the backup then holds epoch 2, and epoch 1 as the `.bkp` copy.
INTERRUPTED_RUN = """
import os, sys
import keras
save = keras.callbacks.BackupAndRestore.on_epoch_end
def on_epoch_end(self, epoch, logs=None):
    save(self, epoch, logs)
    if epoch + 1 == 2:
        os._exit(3)
keras.callbacks.BackupAndRestore.on_epoch_end = on_epoch_end
from embedding_net.cli.train import main
sys.exit(main(sys.argv[1:]))
"""


def _overrides(root, work_dir):
    return tiny_overrides(root, work_dir, NAME) + ["train.epochs=4", "train.steps_per_epoch=5"]


@pytest.fixture(scope="module")
def interrupted(omniglot_subset, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("interrupted")
    sets = [f"--set={item}" for item in _overrides(omniglot_subset, work_dir)]
    command = [sys.executable, "-c", INTERRUPTED_RUN, *sets]
    result = subprocess.run(command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 3, result.stderr[-2000:]
    backup = work_dir / NAME / "backup"
    assert {"latest.weights.h5", "latest.weights.h5.bkp", "training_metadata.json",
            "training_metadata.json.bkp"} <= set(os.listdir(backup))
    return work_dir / NAME


def _copy(interrupted, work_dir):
    """The interrupted run moved to `work_dir`, its config.yml saying so (as the same command
    with the new output.work_dir would have written it)."""
    run_dir = work_dir / NAME
    shutil.copytree(interrupted, run_dir)
    config = run_dir / "config.yml"
    config.write_text(config.read_text().replace(str(interrupted.parent), str(work_dir)))
    return run_dir


def _garbage(path):
    path.write_bytes(b"\x00garbage, not what was saved\xff" * 3)


def _torn(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


DAMAGE = {
    # Nothing reads the checkpoints on resume: they are written again at the next epoch end.
    "checkpoints_overwritten": ({"checkpoints/last.keras": _garbage, "checkpoints/best.keras": _garbage}, None),
    "last_weights_torn": ({"backup/latest.weights.h5": _torn}, "resuming from the one before it, at epoch 2"),
    "last_epoch_count_garbage": ({"backup/training_metadata.json": _garbage},
                                 "resuming from the one before it, at epoch 2"),
    "both_states_unreadable": ({"backup/latest.weights.h5": _garbage, "backup/latest.weights.h5.bkp": _torn},
                               "starting over"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_the_same_command_resumes_or_starts_over_with_one_line(interrupted, omniglot_subset, tmp_path, capsys, case):
    from embedding_net.cli import main
    from embedding_net.models.builders import load_embedding_model

    run_dir = _copy(interrupted, tmp_path)
    damage, expected = DAMAGE[case]
    for name, spoil in damage.items():
        spoil(run_dir / name)
    capsys.readouterr()
    status = main(["train", *(f"--set={item}" for item in _overrides(omniglot_subset, tmp_path))])
    err = capsys.readouterr().err
    assert status == 0 and "Traceback" not in err, err[-3000:]
    notes = [line for line in err.splitlines() if "backup" in line]
    if expected is None:
        assert not notes, notes
    else:
        assert len(notes) == 1 and notes[0].startswith("warning: ") and expected in notes[0], err[-3000:]
        assert_one_line(notes[0], str(run_dir / "backup"))
    with open(run_dir / "history.csv", newline="") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1, 2, 3]
    assert not (run_dir / "backup").exists()  # training finished
    for name in ("model.keras", "checkpoints/last.keras", "checkpoints/best.keras"):
        load_embedding_model(str(run_dir / name))


def test_a_row_written_after_the_last_backup_is_dropped_on_resume(tmp_path):
    import h5py

    from embedding_net.training.callbacks import restore_readable_backup

    backup = tmp_path / "backup"
    backup.mkdir()
    with h5py.File(backup / "latest.weights.h5", "w") as store:
        store["w"] = [1.0, 2.0]
    (backup / "training_metadata.json").write_text('{"epoch": 2}')
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n0,0.5\n1,0.4\n2,0.3\n")  # epoch 2 logged, killed before its backup
    assert restore_readable_backup(str(backup), str(history)) is None
    assert history.read_text().splitlines() == ["epoch,loss", "0,0.5", "1,0.4"]
