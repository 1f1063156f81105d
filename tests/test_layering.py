"""The package's layering holds: import-linter's contracts (setup.cfg), and test.py classifying,
enrolling and evaluating with a LiteRT model without ever importing TensorFlow."""

import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from helpers import saved_conv4_with_litert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_contracts_are_kept():
    command = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert command, "import-linter is a test requirement (requirements-dev.txt)"
    result = subprocess.run([command, "--config", os.path.join(ROOT, "setup.cfg")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def litert_run(tmp_path_factory):
    """A saved model with its LiteRT copy, encodings of a labelled folder, and that folder."""
    from embedding_net.inference import enroll_folder, save_encodings

    root = tmp_path_factory.mktemp("litert_run")
    model, path = saved_conv4_with_litert(root)
    rng = np.random.default_rng(0)
    for name in ("circle", "cross", "triangle"):
        os.makedirs(root / "folder" / name)
        for i in range(3):
            cv2.imwrite(str(root / "folder" / name / f"{i}.png"), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    save_encodings(str(root / "enc.npz"), enroll_folder(model, str(root / "folder")))
    return root, path


@pytest.mark.parametrize("action", ["--image", "--enroll", "--data"])
def test_test_py_with_a_litert_model_never_imports_tensorflow(litert_run, action):
    root, weights = litert_run
    target = {"--image": str(root / "folder" / "cross" / "1.png"), "--enroll": str(root / "folder"),
              "--data": str(root / "folder")}[action]
    encodings = str(root / ("again.npz" if action == "--enroll" else "enc.npz"))
    script = ("import sys, test; code = test.main(sys.argv[1:]); "
              "print('tensorflow imported:', 'tensorflow' in sys.modules, 'keras' in sys.modules); sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script, "--weights", weights, "--encodings", encodings,
                             action, target], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "tensorflow imported: False False" in result.stdout
    if action == "--enroll":
        assert os.path.isfile(encodings)
