"""Writes the LiteRT (TFLite) copy of a saved embedding model, `model.tflite`, with the manifest
that `embedding_net.inference.litert` checks before it runs the copy without TensorFlow."""

import contextlib
import hashlib
import io
import json
import os

from embedding_net.atomic import atomic_path, atomic_write_text
from embedding_net.errors import ModelFileError
from embedding_net.inference.litert import MANIFEST_FORMAT, file_sha256, litert_path, manifest_path


def export_litert(model, keras_path):
    """Writes the LiteRT copy of `model`, saved at `keras_path`, and its manifest (atomically).

    Args:
        model: the embedding model (uint8 [B, H, W, C] -> float32 [B, D]) saved at `keras_path`.
        keras_path: its `.keras` file, which must exist: the manifest records its hash.

    Returns:
        The path of the `.tflite` file.

    Raises:
        ModelFileError: the model has an operation LiteRT's built-in set lacks (an earlier
            copy of `keras_path` is removed).
    """
    import tensorflow as tf

    shape = tuple(int(d) for d in model.input_shape[1:])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        # The converter saves a SavedModel first and prints each of its captured variables.
        with contextlib.redirect_stdout(io.StringIO()):
            flatbuffer = converter.convert()
    except Exception as error:  # the converter raises several types; all mean "not convertible"
        # An earlier copy would be stale already; removed, it cannot be mistaken for this model.
        for stale in (litert_path(keras_path), manifest_path(keras_path)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(stale)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"cannot convert {keras_path} to LiteRT: {reason}") from error
    path = litert_path(keras_path)
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(flatbuffer)
    # Written last: a crash before this line leaves the old manifest, whose hashes no longer
    # match, so the new flatbuffer is simply not used.
    manifest = {"format": MANIFEST_FORMAT, "keras_file": os.path.basename(keras_path),
                "keras_sha256": file_sha256(keras_path), "tflite_sha256": hashlib.sha256(flatbuffer).hexdigest(),
                "input_shape": list(shape), "embedding_size": int(model.output_shape[-1]),
                "tensorflow": tf.__version__}
    atomic_write_text(manifest_path(keras_path), json.dumps(manifest, indent=2) + "\n")
    return path
