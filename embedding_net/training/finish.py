"""What the chief does once training ends, phase by phase, each announced and timed so that a
run never looks hung: the LiteRT and serving copies, embedding the splits, the evaluation, the
pictures, the reference encodings, the class tables, metrics.json and the TensorBoard logs.
Part of the training layer (the runner calls `finish_run`)."""

import contextlib
import json
import os
import time

from embedding_net.atomic import atomic_write_text
from embedding_net.training.data import embed_split
from embedding_net.training.outputs import (
    evaluate,
    plot_after_training,
    write_encodings,
    write_litert_copy,
    write_serving_copies,
)
from embedding_net.training.tensorboard import write_run_tensorboard
from embedding_net.viz.reports import write_class_tables


class Phases:
    """Prints `<what>...` when a phase starts and `<what>: <seconds> s` when it ends (when
    `verbose`), and keeps every phase's seconds."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.seconds = {}

    @contextlib.contextmanager
    def __call__(self, name, what):
        if self.verbose:
            print(f"{what}...", flush=True)
        started = time.time()
        yield
        self.seconds[name] = round(time.time() - started, 1)
        if self.verbose:
            print(f"{what}: {self.seconds[name]} s", flush=True)


def finish_run(config, model, export_model, splits, training_set, tsne_indices, before_training):
    """Writes every output of the run into `config.run_dir` and returns the metrics.

    Args:
        model: the trained embedding model, outside any distribution strategy.
        export_model: the same model computing in float32, for the copies.
        before_training: `{"train_seconds", "selection", "plot_seconds", "tsne_seconds"}` of the
            phases before (seconds of the pictures drawn before training included).
    """
    phase = Phases(config.train.verbose > 0)
    keras_path = os.path.join(config.run_dir, "model.keras")
    exported = {}
    if config.train.export_litert:
        with phase("litert_export", "writing the LiteRT copy model.tflite"):
            exported["litert_export_seconds"] = write_litert_copy(export_model, keras_path)
    if config.train.export_serving:
        with phase("serving_export", "writing the serving copies saved_model/ and model.onnx"):
            exported.update(write_serving_copies(export_model, config.run_dir, ("saved_model", "onnx")))
    count = sum(len(folder) for folder, _ in splits.values())
    with phase("embedding", f"embedding {count:,} images of {', '.join(splits)}"):
        embedded = {name: embed_split(config, model, folder, images) for name, (folder, images) in splits.items()}
    with phase("evaluation", "evaluating"):
        metrics, classes = evaluate(config, splits, embedded)
    if config.evaluation.plots:
        with phase("plots", "drawing plots/"):
            seconds = plot_after_training(config, splits, embedded, training_set, tsne_indices)
        metrics["plot_seconds"] = round(before_training["plot_seconds"] + seconds[0], 1)
        metrics["tsne_seconds"] = round(before_training["tsne_seconds"] + seconds[1], 1)
    with phase("encodings", "writing the reference encodings"):
        write_encodings(config, model, splits, embedded, metrics.get("threshold"))
    metrics["train_seconds"] = round(before_training["train_seconds"], 1)
    metrics["checkpoint_selection"] = before_training["selection"] if config.train.restore_best else "last"
    metrics.update(exported)
    if classes is not None:
        write_class_tables(config.run_dir, *classes)
    atomic_write_text(os.path.join(config.run_dir, "metrics.json"), json.dumps(metrics, indent=2) + "\n")
    if config.output.tensorboard:
        with phase("tensorboard", "writing logs/ for TensorBoard"):
            write_run_tensorboard(config, splits, embedded, metrics)
    return metrics
