"""What a training run leaves behind, as the config says: the LiteRT and serving copies, the
reference encodings (`encodings.npz` for the notebook and old tools, and the same gallery as the
index file `encodings.enidx` that test.py searches memory-mapped), the metrics of the val split,
and the plots. Part of the training layer."""

import os
import time
import warnings

import numpy as np

from embedding_net.inference.encodings import reference_encodings, save_encodings
from embedding_net.inference.gallery import save_encodings_index
from embedding_net.inference.litert import file_sha256
from embedding_net.errors import ConfigError, ModelFileError
from embedding_net.training.export import export_litert
from embedding_net.training.serving import export_onnx, export_saved_model
from embedding_net.viz.reports import plot_gallery, plot_tsne_pair
from embedding_net.evaluation.scoring import score_folders
from embedding_net.training.data import batches, embed_split, load_split
from embedding_net.viz.galleries import plot_batch
from embedding_net.viz.curves import plot_training_curves


def write_litert_copy(model, keras_path):
    """Writes model.tflite for test.py's fast start; a model LiteRT cannot convert only warns
    (test.py then loads model.keras). Returns the seconds it took."""
    started = time.time()
    try:
        export_litert(model, keras_path)
    except ModelFileError as error:
        warnings.warn(f"{error}; test.py will load the .keras model with TensorFlow", stacklevel=2)
    return round(time.time() - started, 1)


# Each serving format: its export function and what it writes in the run folder, beside model.keras.
SERVING_FORMATS = {"saved_model": (export_saved_model, "saved_model"), "onnx": (export_onnx, "model.onnx")}


def write_serving_copies(model, run_dir, formats):
    """Writes the serving copies named in `formats` (keys of `SERVING_FORMATS`) into `run_dir`; a
    model one format cannot express only warns, since model.keras and the others still serve.

    Returns:
        `{"<format>_export_seconds": seconds}`, for metrics.json.
    """
    seconds = {}
    for name in formats:
        export, file_name = SERVING_FORMATS[name]
        started = time.time()
        try:
            export(model, os.path.join(run_dir, file_name))
        except ModelFileError as error:
            warnings.warn(f"{error}; no {file_name} in {run_dir}", stacklevel=2)
        except Exception as error:  # noqa: BLE001 - a copy must never cost the trained model
            # Any other failure (a converter's own bug, a broken install) after hours of
            # training: the run's model.keras, encodings and metrics still get written.
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            warnings.warn(f"cannot write {file_name}: {type(error).__name__} {reason}; model.keras still "
                          "serves", stacklevel=2)
        seconds[f"{name}_export_seconds"] = round(time.time() - started, 1)
    return seconds


def write_encodings(config, model, splits, embedded, threshold=None):
    """Saves the reference encodings: the splits of `encodings.splits`, capped per class, with
    the verification `threshold` beyond which `test.py` answers "unknown", as `encodings.npz`
    and as the index `encodings.enidx` (exact below `gallery.EXACT_UP_TO` images, else hnsw),
    whose manifest records the SHA-256 of the run's `model.keras`."""
    for split in config.encodings.splits:
        if split not in splits:
            if config.data.csv is not None or not os.path.isdir(os.path.join(config.data.folder, split)):
                raise ConfigError(f"encodings.splits must name splits of the data ({', '.join(splits)}), "
                                  f"received: {split!r}")
            folder, images = load_split(config, split, min_images_per_class=1)
            splits[split] = (folder, images)
            embedded[split] = embed_split(config, model, folder, images)
    metadata = {"distance": config.loss.distance, "input_shape": list(config.model.input_shape),
                "backbone": config.model.backbone, "splits": list(config.encodings.splits)}
    if threshold is not None:
        metadata["threshold"] = float(threshold)
    # A val split left out of the gallery (folder runs) calibrates its class radii on images the
    # model did not train on: 2.0 points of in-domain accuracy lost instead of 4.3 on the photo
    # folder of bench/unknown.py. Its classes absent from the gallery are ignored.
    held_out = [(splits[name][0], embedded[name]) for name in (config.data.val_split,)
                if name in splits and name not in config.encodings.splits]
    encodings = reference_encodings([(splits[split][0], embedded[split]) for split in config.encodings.splits],
                                    config.encodings.max_per_class, metadata, held_out=held_out)
    save_encodings(os.path.join(config.run_dir, "encodings.npz"), encodings)
    keras_path = os.path.join(config.run_dir, "model.keras")
    save_encodings_index(os.path.join(config.run_dir, "encodings.enidx"), encodings,
                         model_sha256=file_sha256(keras_path) if os.path.isfile(keras_path) else None)


def evaluate(config, splits, embedded):
    """Every metric of the val split (see `scoring.score_split`), plus the official one-shot
    task when the dataset has one. Val images are queries against the train images when every
    val class appears in train, else leave-one-out within val (new classes, as in Omniglot).

    Returns:
        `(metrics, (labels, predicted, class_names))`, the val labels and top-1 predictions in
        the class ids of `class_names`.
    """
    val_split, train_split = config.data.val_split, config.data.train_split
    if val_split not in splits:
        warnings.warn(f"no {val_split} split under {config.data.folder}: nothing to evaluate", stacklevel=2)
        return {}, None
    (val_folder, _), (train_folder, _) = splits[val_split], splits[train_split]
    return score_folders(val_folder, embedded[val_split], train_folder, embedded[train_split],
                         config.loss.distance, config.evaluation.knn_k, config.evaluation.episodes,
                         config.train.seed, dataset_root=config.data.folder)


def view_folder_split(config, splits):
    """The split shown in pictures: val when there is one, else train."""
    return config.data.val_split if config.data.val_split in splits else config.data.train_split


def plot_after_training(config, splits, embedded, training_set, tsne_indices):
    """The plots of a finished run in `run_dir/plots`: t-SNE after training, the training curves,
    nearest neighbours and one training batch.

    Returns:
        `(plot_seconds, tsne_seconds)`: the time all of them took, and t-SNE's part of it.
    """
    run_dir, shown = config.run_dir, view_folder_split(config, splits)
    started = time.time()
    tsne_seconds = plot_tsne_pair(os.path.join(run_dir, "plots", "tsne_after"), embedded[shown][tsne_indices],
                                  splits[shown][0], tsne_indices, "after training", config.train.seed)
    plot_training_curves(os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "plots", "curves.png"))
    plot_gallery(splits[shown][0], embedded[shown], os.path.join(run_dir, "plots", "neighbours.png"),
                 config.loss.distance, config.train.seed)
    batch_images, batch_labels = next(iter(batches(config, *training_set, config.train.seed)))
    plot_batch(np.asarray(batch_images), np.asarray(batch_labels), os.path.join(run_dir, "plots", "batch.png"),
               class_names=training_set[0].class_names, columns=config.data.images_per_class)
    return time.time() - started, tsne_seconds
