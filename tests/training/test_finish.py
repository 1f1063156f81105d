"""After training: every phase announced and timed, and the serving copies beside model.keras."""

import json
import os

import numpy as np

from helpers import tiny_overrides
from embedding_net import training
from embedding_net.config.loading import load_config
from embedding_net.training.finish import Phases


def test_phases_announce_themselves_and_keep_their_seconds(capsys):
    phase = Phases(verbose=True)
    with phase("embedding", "embedding 10 images"):
        print("inside")
    with Phases(verbose=False)("quiet", "not shown"):
        pass
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["embedding 10 images...", "inside"]
    assert lines[2].startswith("embedding 10 images: ") and lines[2].endswith(" s") and len(lines) == 3
    assert set(phase.seconds) == {"embedding"} and phase.seconds["embedding"] >= 0


def test_a_run_prints_each_phase_and_writes_the_serving_copies(omniglot_subset, tmp_path, capsys):
    import keras
    import onnxruntime

    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path, name="served", export_serving=True)
                         + ["train.verbose=1"])
    metrics = training.run(config)
    out = capsys.readouterr().out
    announced = [line for line in out.splitlines() if line.endswith("...")]
    assert announced == ["writing the serving copies saved_model/ and model.onnx...",
                         "embedding 1,520 images of train, val...", "evaluating...",
                         "writing the reference encodings...", "writing logs/ for TensorBoard..."]
    for line in announced:
        assert any(done.startswith(line[:-3] + ": ") for done in out.splitlines()), line
    assert metrics["saved_model_export_seconds"] >= 0 and metrics["onnx_export_seconds"] >= 0
    with open(os.path.join(config.run_dir, "metrics.json")) as handle:
        assert json.load(handle) == metrics
    assert os.path.isfile(os.path.join(config.run_dir, "saved_model", "saved_model.pb"))
    model = keras.saving.load_model(os.path.join(config.run_dir, "model.keras"))
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    session = onnxruntime.InferenceSession(os.path.join(config.run_dir, "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["embeddings"], {"images": images})[0], model.predict(images, verbose=0),
                               atol=1e-5)


def test_a_serving_copy_that_fails_in_any_way_only_warns(tmp_path, monkeypatch):
    from embedding_net.training import outputs

    def broken(model, path):
        raise AttributeError("a converter's own bug")

    monkeypatch.setitem(outputs.SERVING_FORMATS, "onnx", (broken, "model.onnx"))
    with __import__("pytest").warns(UserWarning, match="cannot write model.onnx: AttributeError a converter's own bug"):
        seconds = outputs.write_serving_copies(None, str(tmp_path), ["onnx"])
    assert set(seconds) == {"onnx_export_seconds"} and not (tmp_path / "model.onnx").exists()
