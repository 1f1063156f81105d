"""Serving copies of a saved embedding model, loadable without embedding_net: a TensorFlow
SavedModel (TF Serving, `tf.saved_model.load`) and an ONNX file (onnxruntime and the rest).

Both take the model's own input, raw uint8 images [N, H, W, C] named `images`, and give its unit
embeddings, float32 [N, D] named `embeddings`; the preprocessing is inside the model, so a
server sends the decoded pixels as they are. Both are written atomically.
"""

import contextlib
import io
import logging
import os

from embedding_net.atomic import atomic_directory, atomic_path
from embedding_net.errors import ModelFileError

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
# ONNX operator set 17: run by every onnxruntime since 1.13 (2022) and by TensorRT 8.6.
ONNX_OPSET = 17


def _serving_function(model):
    """The model as a function of uint8 images, its input signature, and named output."""
    import tensorflow as tf

    shape = [None, *(None if d is None else int(d) for d in model.input_shape[1:])]
    spec = tf.TensorSpec(shape, tf.uint8, name=INPUT_NAME)

    def embed(images):
        # float32 even for a mixed-precision model, so every copy answers in the same dtype.
        return {OUTPUT_NAME: tf.cast(model(images, training=False), tf.float32)}

    return embed, spec


def export_saved_model(model, path):
    """Writes `model` as a TensorFlow SavedModel folder at `path` (replacing one there atomically).

    Its signature `serving_default` (also named `serve`) takes `images`, uint8 [N, H, W, C], and
    returns `{"embeddings": float32 [N, D]}`: what TF Serving's REST and gRPC APIs expose.

    Returns:
        `path`.
    """
    import keras

    embed, spec = _serving_function(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint is also saved as `serving_default`, the one TF Serving calls by default.
    archive.add_endpoint("serve", embed, input_signature=[spec])
    with atomic_directory(path) as temporary:
        archive.write_out(temporary, verbose=False)
    return path


def export_onnx(model, path):
    """Writes `model` as an ONNX file at `path` (atomically), converted by tf2onnx.

    The graph's input is `images`, uint8 [batch, H, W, C]; its output `embeddings`, float32
    [batch, D]; operator set `ONNX_OPSET`.

    Returns:
        `path`.

    Raises:
        ModelFileError: tf2onnx has no ONNX equivalent for an operation of the model (an
            earlier file at `path` is removed, so it cannot be mistaken for this model).
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    embed, spec = _serving_function(model)
    function = tf.function(embed, input_signature=[spec])
    try:
        # tf2onnx logs each rewriting pass at INFO and prints the graph's variables.
        with _quiet("tf2onnx"), contextlib.redirect_stdout(io.StringIO()):
            proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=ONNX_OPSET,
                                                     custom_op_handlers={"Erfc": (_erfc, [])})
        # tf2onnx only logs an operation it cannot map, and keeps it in the graph as it is:
        # the checker is what refuses such a file before anything serves it.
        onnx.checker.check_model(proto)
    except Exception as error:  # tf2onnx and the checker raise several types; all mean "not convertible"
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(f"cannot convert the model to ONNX for {path}: {reason}") from error
    # tf2onnx calls the batch axis "unk__48"; a readable name shows in Netron and in errors.
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(proto.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
    return path


def _erfc(graph, node, name, args):
    """Rewrites TensorFlow's Erfc, which ONNX lacks, as 1 - Erf: Keras's exact GELU (the DINOv2
    and SigLIP towers) computes erfc, and tf2onnx has no mapping for it."""
    import numpy as np
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(graph.get_dtype(node.output[0]))
    one = graph.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype))
    graph.insert_new_node_on_output("Sub", node.output[0], inputs=[one.output[0], node.output[0]])


@contextlib.contextmanager
def _quiet(name):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
