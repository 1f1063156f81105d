"""TensorBoard for a run, all under `<run_dir>/logs` (`tensorboard --logdir <run_dir>/logs`):

- `train/`, `validation/`: Keras' per-epoch scalars (`epoch_loss`, `epoch_learning_rate`, the
  collapse monitors `epoch_positive_distance`, ...), written by `tensorboard_callback`;
- `evaluation/`: the numbers of `metrics.json` as `final/<name>` at the last epoch's step;
- `projector/`: the embedding projector of the val embeddings (`write_projector`): a checkpoint
  of one [N, D] variable, `metadata.tsv` (class and image of each point), `sprite.png` and
  `projector_config.pbtxt`, with the layout of TensorFlow's guide "Visualizing Data using the
  Embedding Projector in TensorBoard". Part of the training layer.
"""

import math
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from embedding_net.atomic import atomic_directory
from embedding_net.data.images import read_images
from embedding_net.training.outputs import view_folder_split
from embedding_net.viz.sprites import save_png, sprite_image, sprite_tile, stratified_subsample, thumbnail

LOG_DIR = "logs"
MAX_POINTS = 10_000  # the projector's PCA and t-SNE stay interactive in a browser up to ~10k
# The name `tf.train.Checkpoint(embedding=...)` gives the variable in the checkpoint.
TENSOR_NAME = "embedding/.ATTRIBUTES/VARIABLE_VALUE"


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` writing per-epoch scalars only: no graph, no profiling,
    no histograms, nothing per step.

    With `update_freq="epoch"` no summary writer is active during the steps, so Keras' per-step
    `batch_<metric>` summaries are dropped anyway, yet the `tf.summary.scalar` calls still cost
    about 0.1 ms each (0.7 ms a step for six metrics on CPU): this callback skips them.
    """

    def __init__(self, log_dir):
        super().__init__(log_dir, histogram_freq=0, write_graph=False, write_images=False,
                         write_steps_per_second=False, update_freq="epoch", profile_batch=0)

    def on_train_batch_end(self, batch, logs=None):
        pass


def tensorboard_callback(log_dir):
    """The callback writing a run's per-epoch scalars into `log_dir/train` and `log_dir/validation`.

    Put it before callbacks that change the learning rate at an epoch's end (reduce on plateau):
    it logs the optimizer's rate when it runs, the rate of the epoch that just ended.
    """
    return EpochTensorBoard(log_dir)


def write_final_metrics(log_dir, metrics, step):
    """Writes every finite number of `metrics` as the scalar `final/<name>` at `step` into
    `log_dir/evaluation`; strings and flags are left out."""
    writer = tf.summary.create_file_writer(os.path.join(log_dir, "evaluation"))
    with writer.as_default():
        for name, value in sorted(metrics.items()):
            if isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_) \
                    and math.isfinite(value):
                tf.summary.scalar(f"final/{name}", float(value), step=step)
    writer.close()


def write_projector(folder, embeddings, labels, class_names, images=None, names=None,
                    max_points=MAX_POINTS, seed=0, description=None):
    """Writes the embedding projector's files of `embeddings` into `folder` (a TensorBoard run
    of its own: `<log_dir>/projector`), replacing what was there.

    Args:
        folder: the folder to write (its parent is the `--logdir` to give TensorBoard).
        embeddings: float [N, D].
        labels: int [N], indices into `class_names`.
        class_names: the name of each class, the `class` column of `metadata.tsv`.
        images: uint8 [N, H, W, 1 or 3] for the sprite, or None for no sprite.
        names: the `image` column of `metadata.tsv` (e.g. file paths); default: the indices.
        max_points: at most this many points, a seeded sample stratified by class.
        seed: the sample's seed.
        description: Markdown shown in TensorBoard's text tab for this run.

    Returns:
        The indices of the points written, in their order in the files.
    """
    embeddings, labels = np.asarray(embeddings, np.float32), np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels) or not len(labels):
        raise ValueError(f"need embeddings [N > 0, D] and N labels. Received {embeddings.shape} and {labels.shape}")
    chosen = stratified_subsample(labels, max_points, seed)
    names = [str(i) for i in range(len(labels))] if names is None else list(names)
    # Written whole in a hidden folder, then renamed into place: TensorBoard never reads a
    # checkpoint whose metadata or sprite is missing or of another sample.
    with atomic_directory(folder) as staging:
        _write_files(staging, embeddings[chosen], [class_names[label] for label in labels[chosen]],
                     [names[i] for i in chosen], None if images is None else np.asarray(images)[chosen],
                     description or f"{len(chosen)} embeddings of {len(np.unique(labels[chosen]))} classes")
    return chosen


def _write_files(folder, embeddings, classes, names, images, description):
    tf.train.Checkpoint(embedding=tf.Variable(embeddings)).save(os.path.join(folder, "embedding.ckpt"))

    def cell(text):  # a tab or line break would shift the columns of every later row
        return " ".join(str(text).split())

    with open(os.path.join(folder, "metadata.tsv"), "w", encoding="utf-8") as handle:
        # With two columns or more the projector reads the first row as the header.
        handle.write("class\timage\n")
        handle.writelines(f"{cell(c)}\t{cell(n)}\n" for c, n in zip(classes, names))
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = TENSOR_NAME  # no model_checkpoint_path: found from `checkpoint`,
    embedding.metadata_path = "metadata.tsv"  # and every path relative, so the run can move
    if images is not None:
        sprite, (tile_height, tile_width) = sprite_image(images)
        save_png(os.path.join(folder, "sprite.png"), sprite)
        embedding.sprite.image_path = "sprite.png"
        embedding.sprite.single_image_dim.extend([tile_width, tile_height])
    projector.visualize_embeddings(folder, config)
    # TensorBoard's projector looks only in runs, folders holding an event file.
    writer = tf.summary.create_file_writer(folder)
    with writer.as_default():
        tf.summary.text("projector", description, step=0)
    writer.close()


# What the runner calls: the config read here, the work done by the functions above.


def tensorboard_enabled(config):
    return bool(config.output.tensorboard)


def tensorboard_callbacks(config, chief, resumed):
    """`[tensorboard_callback]` into `<run_dir>/logs` on the chief (workers write nothing that
    lasts), or `[]` when the config switches TensorBoard off. A run that starts over (not
    `resumed`) first deletes the logs of an earlier run in the same folder, as it overwrites
    `history.csv`: TensorBoard would draw both runs' epochs as one curve."""
    if not chief or not tensorboard_enabled(config):
        return []
    log_dir = os.path.join(config.run_dir, LOG_DIR)
    if not resumed:
        shutil.rmtree(log_dir, ignore_errors=True)
    return [tensorboard_callback(log_dir)]


def write_run_tensorboard(config, splits, embedded, metrics):
    """After training, on the chief: the final metrics and the projector of the split shown in
    pictures (val, else train), its sprite from the images as the model sees them."""
    if not tensorboard_enabled(config):
        return
    log_dir = os.path.join(config.run_dir, LOG_DIR)
    write_final_metrics(log_dir, metrics, max(config.train.epochs - 1, 0))
    split = view_folder_split(config, splits)
    folder, images = splits[split]
    chosen = stratified_subsample(folder.labels, MAX_POINTS, config.train.seed)
    height, width, channels = config.model.input_shape
    # Straight to the sprite's tile size: 10,000 images at 224 px would take 1.5 GB.
    tile = sprite_tile(len(chosen), height, width)
    if images is None:  # decoded batch by batch during training: read the sample, shrunk as read
        images = read_images([folder.paths[i] for i in chosen], tile, channels)[0]
    else:
        images = np.stack([thumbnail(images[i], tile) for i in chosen])
    names = [_relative(folder.paths[i], folder.root) for i in chosen]
    write_projector(os.path.join(log_dir, "projector"), embedded[split][chosen], folder.labels[chosen],
                    folder.class_names, images, names, seed=config.train.seed,
                    description=f"{len(chosen)} of the {len(folder)} images of the {split} split "
                                f"(a seeded sample stratified by class), {len(folder.class_names)} classes")


def _relative(path, root):
    relative = os.path.relpath(path, root) if root else path
    return path if relative.startswith("..") else relative
