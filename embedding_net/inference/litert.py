"""A TensorFlow-free copy of a saved embedding model, so that inference starts in a second.

`test.py` on one image used to spend nearly all of its time importing TensorFlow (3-6 s on two
cores), not embedding. So train.py also writes the embedding model as a LiteRT (TFLite)
flatbuffer, `model.tflite`, next to `model.keras`, and `test.py` runs it with the small
`ai-edge-litert` interpreter (imported in about 0.2 s) when it can:

- the copy is made from the same Keras model, preprocessing included, so it takes the same raw
  uint8 images and gives the same embeddings (tests compare them to 1e-5);
- `model.tflite.json` records the SHA-256 of the `.keras` file it was made from and of the
  flatbuffer itself; `load_inference_model` uses the copy only when both still match, so a
  retrained, replaced or torn file is never used in place of the model the user named;
- otherwise (no copy, a stale one, no `ai-edge-litert` on the platform) it loads the `.keras`
  file with Keras in safe mode, exactly as before.

The copy is written by `embedding_net.training.export.export_litert` (TensorFlow converts it);
this module only reads it. A flatbuffer holds tensors and built-in operations only (conversion is restricted to LiteRT's
built-in op set): loading one runs no Python code.
"""

import hashlib
import json
import os

import numpy as np

from embedding_net.console import native_stderr_silenced
from embedding_net.errors import ModelFileError

MANIFEST_FORMAT = 1


def litert_path(keras_path):
    """Where the LiteRT copy of `keras_path` lives: the same name with `.tflite`."""
    return os.path.splitext(keras_path)[0] + ".tflite"


def manifest_path(keras_path):
    """The JSON manifest tying the LiteRT copy to its `.keras` file."""
    return litert_path(keras_path) + ".json"


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fresh_litert_copy(keras_path):
    """The `.tflite` made from `keras_path` as it is now, or None (none, stale, or torn)."""
    path, manifest_file = litert_path(keras_path), manifest_path(keras_path)
    if not (os.path.isfile(path) and os.path.isfile(manifest_file) and os.path.isfile(keras_path)):
        return None
    try:
        with open(manifest_file, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if manifest.get("keras_sha256") != file_sha256(keras_path) or manifest.get("tflite_sha256") != file_sha256(path):
        return None
    return path


def litert_available():
    """True when the `ai-edge-litert` interpreter can be imported (not on every platform)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        return False
    return True


class LiteRTEmbeddingModel:
    """An embedding model run by the LiteRT interpreter, with the part of the `keras.Model`
    interface that embedding and classification use: `input_shape`, `output_shape`, `predict`.

    Args:
        path: a `.tflite` file written by `export_litert`.
        num_threads: interpreter threads (default: every usable core).
    """

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        if num_threads is None:
            num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.num_threads = num_threads
        try:
            self._interpreter = Interpreter(model_path=path, num_threads=self.num_threads)
        except (ValueError, RuntimeError) as error:
            raise ModelFileError(f"cannot load LiteRT model {path}: {str(error).strip().splitlines()[0]}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.input_shape = (None, *(int(d) for d in self._input["shape"][1:]))
        self.output_shape = (None, int(self._output["shape"][-1]))
        self._batch = None

    def predict(self, images, batch_size=256, verbose=0):
        """Embeds uint8 images [N, H, W, C] (`verbose` is accepted for Keras compatibility)."""
        del verbose
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"images must be uint8 [N, {', '.join(map(str, self.input_shape[1:]))}]. "
                             f"Received: {images.dtype} {images.shape}")
        outputs = []
        for begin in range(0, len(images), batch_size):
            block = images[begin : begin + batch_size]
            if self._batch != len(block):
                self._interpreter.resize_tensor_input(self._input["index"], block.shape)
                # LiteRT's C++ logs "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." to
                # file descriptor 2 here, on every run: a line that tells a user nothing.
                with native_stderr_silenced():
                    self._interpreter.allocate_tensors()
                self._batch = len(block)
            self._interpreter.set_tensor(self._input["index"], block)
            self._interpreter.invoke()
            outputs.append(np.array(self._interpreter.get_tensor(self._output["index"]), np.float32))
        return np.concatenate(outputs) if outputs else np.zeros((0, self.output_shape[1]), np.float32)


def load_inference_model(path, prefer_litert=True):
    """The model to embed images with at inference: the LiteRT copy when it is fresh and the
    interpreter is installed, else the `.keras` file loaded by Keras in safe mode.

    Args:
        path: a `.keras` file written by train.py, or a `.tflite` file (used as it is).
        prefer_litert: False always loads the `.keras` file (with TensorFlow).

    Raises:
        ModelFileError: the file is missing or is not a model.
    """
    if path.endswith(".tflite"):
        if not os.path.isfile(path):
            raise ModelFileError(f"model file not found: {path}")
        if not litert_available():
            raise ModelFileError(f"{path} needs the LiteRT interpreter: pip install ai-edge-litert")
        return LiteRTEmbeddingModel(path)
    if prefer_litert:
        copy = fresh_litert_copy(path)
        if copy is not None and litert_available():
            return LiteRTEmbeddingModel(copy)
    from embedding_net.models.builders import load_embedding_model  # imports TensorFlow

    return load_embedding_model(path)
