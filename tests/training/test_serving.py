"""The serving copies (TensorFlow SavedModel, ONNX) give model.keras's embeddings to 1e-5, loaded
the way a server without embedding_net loads them, and are written atomically."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from embedding_net.atomic import atomic_directory
from embedding_net.errors import ModelFileError

# Run in a fresh Python where embedding_net cannot be imported: a serving machine has none.
SERVE = """
import json, sys
sys.modules["embedding_net"] = None  # any import of it now raises
import numpy as np
import onnxruntime
import tensorflow as tf
name, images = sys.argv[1], np.load(sys.argv[2])
serve = tf.saved_model.load(name + "_saved_model").signatures["serving_default"]
session = onnxruntime.InferenceSession(name + ".onnx", providers=["CPUExecutionProvider"])
print(json.dumps({
    "saved_model": serve(images=tf.constant(images))["embeddings"].numpy().tolist(),
    "saved_model_inputs": {key: (spec.dtype.name, spec.shape.as_list())
                           for key, spec in serve.structured_input_signature[1].items()},
    "onnx": session.run(["embeddings"], {"images": images})[0].tolist(),
    "onnx_inputs": [(i.name, i.type, i.shape) for i in session.get_inputs()],
}))
"""


def _export(name, shape, size, folder, seed=0):
    """A model saved as model.keras and exported in both formats; returns the model."""
    import keras

    from embedding_net.models import build_embedding_model
    from embedding_net.training.serving import export_onnx, export_saved_model

    keras.utils.set_random_seed(seed)
    model = build_embedding_model(name, shape, size)
    model.save(str(folder / f"{name}.keras"))
    assert export_saved_model(model, str(folder / f"{name}_saved_model")) == str(folder / f"{name}_saved_model")
    assert export_onnx(model, str(folder / f"{name}.onnx")) == str(folder / f"{name}.onnx")
    return model


@pytest.mark.parametrize("name, shape, size", [
    ("conv4", (28, 28, 1), 16),
    # Three channels, ImageNet preprocessing, residual blocks: 11M weights, so about 25 s.
    pytest.param("resnet18", (32, 32, 3), 8, marks=pytest.mark.slow),
])
def test_both_copies_give_the_keras_embeddings_without_embedding_net(tmp_path, name, shape, size):
    import keras

    _export(name, shape, size, tmp_path)
    images = np.random.default_rng(0).integers(0, 256, (6, *shape), dtype=np.uint8)
    images[0] = 0  # the ends of the range, where a wrong cast or scaling shows most
    images[1] = 255
    np.save(tmp_path / f"{name}_images.npy", images)
    expected = keras.saving.load_model(str(tmp_path / f"{name}.keras")).predict(images, verbose=0)

    result = subprocess.run([sys.executable, "-c", SERVE, name, f"{name}_images.npy"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["saved_model_inputs"] == {"images": ["uint8", [None, *shape]]}
    assert answer["onnx_inputs"] == [["images", "tensor(uint8)", ["batch", *shape]]]
    for copy in ("saved_model", "onnx"):
        embeddings = np.asarray(answer[copy], dtype=np.float32)
        assert embeddings.shape == (6, size)
        difference = np.abs(embeddings - expected).max()
        assert difference < 1e-5, f"{name} {copy}: max abs difference {difference}"


def test_a_new_export_replaces_the_old_one_and_leaves_no_temporary_files(tmp_path):
    import onnxruntime
    import tensorflow as tf

    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    first = _export("conv4", (28, 28, 1), 16, tmp_path, seed=0).predict(images, verbose=0)
    os.remove(tmp_path / "conv4.keras")
    for _ in range(2):
        wanted = _export("conv4", (28, 28, 1), 16, tmp_path, seed=1).predict(images, verbose=0)
    assert np.abs(wanted - first).max() > 1e-3  # the seed did change the model
    assert sorted(os.listdir(tmp_path)) == ["conv4.keras", "conv4.onnx", "conv4_saved_model"]
    served = tf.saved_model.load(str(tmp_path / "conv4_saved_model")).signatures["serving_default"]
    session = onnxruntime.InferenceSession(str(tmp_path / "conv4.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(served(images=tf.constant(images))["embeddings"].numpy(), wanted, atol=1e-5)
    np.testing.assert_allclose(session.run(["embeddings"], {"images": images})[0], wanted, atol=1e-5)


def test_an_export_that_fails_halfway_keeps_the_old_folder(tmp_path):
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "saved_model.pb").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_directory(str(tmp_path / "saved_model")) as temporary:
            with open(os.path.join(temporary, "saved_model.pb"), "w") as handle:
                handle.write("half")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == ["saved_model"]
    assert (tmp_path / "saved_model" / "saved_model.pb").read_text() == "old"
    with atomic_directory(str(tmp_path / "saved_model")) as temporary:
        with open(os.path.join(temporary, "saved_model.pb"), "w") as handle:
            handle.write("new")
    assert os.listdir(tmp_path) == ["saved_model"]
    assert os.listdir(tmp_path / "saved_model") == ["saved_model.pb"]
    assert (tmp_path / "saved_model" / "saved_model.pb").read_text() == "new"


def _gelu_model():
    """A tiny model whose exact GELU TensorFlow computes with Erfc, an operation ONNX lacks."""
    import keras

    keras.utils.set_random_seed(0)
    images = keras.Input((5, 5, 2), dtype="uint8")
    hidden = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(images))
    hidden = keras.layers.Dense(16, activation="gelu")(hidden)  # keras: approximate=False
    return keras.Model(images, keras.layers.Dense(4)(hidden))


def test_the_exact_gelu_of_the_foundation_towers_converts(tmp_path):
    import onnxruntime

    from embedding_net.training.serving import export_onnx

    model = _gelu_model()
    images = np.random.default_rng(0).integers(0, 256, (8, 5, 5, 2), dtype=np.uint8)
    export_onnx(model, str(tmp_path / "gelu.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "gelu.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(["embeddings"], {"images": images})[0], model.predict(images, verbose=0),
                               atol=1e-5)


def test_an_operation_onnx_lacks_is_refused_and_the_stale_file_removed(tmp_path, monkeypatch):
    from embedding_net.training import serving

    # Without the rewrite, tf2onnx keeps Erfc in the graph and only logs an error.
    monkeypatch.setattr(serving, "_erfc", lambda graph, node, name, args: None)
    (tmp_path / "model.onnx").write_bytes(b"an older model's graph")
    with pytest.raises(ModelFileError, match=r"cannot convert the model to ONNX .*Erfc"):
        serving.export_onnx(_gelu_model(), str(tmp_path / "model.onnx"))
    assert os.listdir(tmp_path) == []


def test_write_serving_copies_times_each_format_and_only_warns_on_a_refused_one(tmp_path, monkeypatch):
    from embedding_net.models import build_embedding_model
    from embedding_net.training import outputs

    def refuse(model, path):
        raise ModelFileError(f"cannot convert the model to ONNX for {path}: no such op")

    monkeypatch.setitem(outputs.SERVING_FORMATS, "onnx", (refuse, "model.onnx"))
    with pytest.warns(UserWarning, match="no such op; no model.onnx in"):
        seconds = outputs.write_serving_copies(build_embedding_model("conv4", (28, 28, 1), 4), str(tmp_path),
                                               ["saved_model", "onnx"])
    assert sorted(seconds) == ["onnx_export_seconds", "saved_model_export_seconds"]
    assert os.listdir(tmp_path) == ["saved_model"]
    assert os.path.isfile(tmp_path / "saved_model" / "saved_model.pb")
