"""The LiteRT copy of an embedding model: same embeddings, used only while it is fresh."""

import json
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from embedding_net.inference import litert as export
from embedding_net.training.export import export_litert
from embedding_net.errors import ModelFileError
from embedding_net.models.builders import build_embedding_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def saved_model(tmp_path, name="model.keras", seed=0, **options):
    import keras

    keras.utils.set_random_seed(seed)
    model = build_embedding_model(options.pop("backbone", "conv4"), options.pop("input_shape", (28, 28, 1)),
                                  16, **options)
    path = str(tmp_path / name)
    model.save(path)
    return model, path


def images(shape, count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


@pytest.mark.parametrize("options", [{}, {"pooling": "gem", "invert": True}, {"pooling": "max"},
                                     {"backbone": "resnet18", "input_shape": (32, 32, 3)}],
                         ids=["conv4", "conv4-gem-invert", "conv4-max", "resnet18-rgb"])
def test_litert_copy_embeds_like_the_keras_model(tmp_path, options):
    shape = options.get("input_shape", (28, 28, 1))
    model, path = saved_model(tmp_path, **dict(options))
    written = export_litert(model, path)
    assert written == str(tmp_path / "model.tflite")
    manifest = json.loads(open(export.manifest_path(path)).read())
    assert manifest["keras_sha256"] == export.file_sha256(path)
    assert manifest["input_shape"] == list(shape) and manifest["embedding_size"] == 16
    litert = export.LiteRTEmbeddingModel(written)
    assert litert.input_shape == (None, *shape) and litert.output_shape == (None, 16)
    # Batches of one, several, and more than `batch_size` (split, and the last one shorter).
    for count, batch_size in ((1, 256), (7, 256), (300, 128)):
        x = images(shape, count, seed=count)
        expected = model.predict(x, verbose=0)
        got = litert.predict(x, batch_size=batch_size)
        assert got.dtype == np.float32 and got.shape == (count, 16)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert litert.predict(np.zeros((0, *shape), np.uint8)).shape == (0, 16)
    with pytest.raises(ValueError, match="must be uint8"):
        litert.predict(np.zeros((1, *shape), np.float32))


def test_the_copy_is_used_only_while_it_matches_the_keras_file(tmp_path):
    model, path = saved_model(tmp_path)
    assert export.fresh_litert_copy(path) is None  # not exported yet
    export_litert(model, path)
    assert export.fresh_litert_copy(path) == export.litert_path(path)
    assert isinstance(export.load_inference_model(path), export.LiteRTEmbeddingModel)
    assert not isinstance(export.load_inference_model(path, prefer_litert=False), export.LiteRTEmbeddingModel)

    # The .keras file retrained and saved again: the old copy no longer counts.
    other, _ = saved_model(tmp_path, seed=1)
    assert export.fresh_litert_copy(path) is None
    loaded = export.load_inference_model(path)
    assert not isinstance(loaded, export.LiteRTEmbeddingModel)
    x = images((28, 28, 1), 3)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), other.predict(x, verbose=0), atol=1e-6)

    # A torn or altered flatbuffer, a missing or garbled manifest: not used either.
    export_litert(other, path)
    assert export.fresh_litert_copy(path) is not None
    data = bytearray(open(export.litert_path(path), "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(export.litert_path(path), "wb").write(bytes(data))
    assert export.fresh_litert_copy(path) is None
    export_litert(other, path)
    open(export.manifest_path(path), "w").write("{not json")
    assert export.fresh_litert_copy(path) is None
    os.remove(export.manifest_path(path))
    assert export.fresh_litert_copy(path) is None


def test_a_tflite_path_is_used_as_it_is_and_errors_name_the_file(tmp_path):
    model, path = saved_model(tmp_path)
    tflite = export_litert(model, path)
    assert isinstance(export.load_inference_model(tflite), export.LiteRTEmbeddingModel)
    with pytest.raises(ModelFileError, match="nope.tflite"):
        export.load_inference_model(str(tmp_path / "nope.tflite"))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ModelFileError, match="bad.tflite"):
        export.load_inference_model(str(bad))


def test_classifying_with_a_fresh_copy_never_imports_tensorflow(tmp_path):
    from embedding_net.inference.encodings import make_encodings, save_encodings

    model, path = saved_model(tmp_path)
    export_litert(model, path)
    import cv2

    references = images((28, 28, 1), 4)
    for i, image in enumerate(references):
        cv2.imwrite(str(tmp_path / f"ref{i}.png"), image[..., 0])
    save_encodings(str(tmp_path / "enc.npz"),
                   make_encodings(model.predict(references, verbose=0), [0, 1, 2, 3], ["a", "b", "c", "d"],
                                  [f"ref{i}.png" for i in range(4)]))
    script = ("import sys, test; code = test.main(sys.argv[1:]); "
              "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(code)")
    arguments = ["--weights", path, "--encodings", str(tmp_path / "enc.npz"), "--image", str(tmp_path / "ref2.png")]
    env = dict(os.environ, PYTHONPATH=ROOT)
    fast = subprocess.run([sys.executable, "-c", script, *arguments], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert fast.returncode == 0, fast.stderr
    assert "tensorflow imported: False" in fast.stdout
    assert fast.stdout.startswith(f"{tmp_path / 'ref2.png'}: c (distance 0.0")
    slow = subprocess.run([sys.executable, "-c", script, *arguments, "--keras"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert slow.returncode == 0, slow.stderr
    assert "tensorflow imported: True" in slow.stdout
    # The same answer; distances near 0 differ in rounding only (sqrt of ~1e-7).
    assert slow.stdout.startswith(f"{tmp_path / 'ref2.png'}: c (distance 0.000")


def test_training_warns_and_drops_a_stale_copy_when_conversion_fails(tmp_path, monkeypatch):
    from embedding_net.training import outputs as training_outputs

    import tensorflow as tf

    model, path = saved_model(tmp_path)
    export_litert(model, path)

    class FailingConverter:
        target_spec = types.SimpleNamespace(supported_ops=None)

        def convert(self):
            raise ValueError("'tf.RealDiv' op is neither a custom op nor a flex op")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", lambda model: FailingConverter())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        training_outputs.write_litert_copy(model, path)
    assert any("cannot convert" in str(w.message) and "TensorFlow" in str(w.message) for w in caught)
    assert not os.path.exists(export.litert_path(path)) and not os.path.exists(export.manifest_path(path))
