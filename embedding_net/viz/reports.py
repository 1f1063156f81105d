"""The files a run writes about its results: class tables and pictures, from plain arguments."""

import os
import time

import numpy as np

from embedding_net.atomic import atomic_write_csv
from embedding_net.evaluation.classification import confusion_matrix, per_class_accuracy
from embedding_net.viz.galleries import nearest_neighbours, plot_neighbour_gallery
from embedding_net.viz.maps import plot_tsne, plot_tsne_interactive, tsne_2d


def plot_tsne_pair(stem, embeddings, folder, indices, stage, seed):
    """The static PNG and the interactive HTML t-SNE of the images `indices` of `folder`, drawn
    from one t-SNE map. Returns the seconds the t-SNE itself took."""
    started = time.time()
    points, _ = tsne_2d(embeddings, max_points=len(embeddings), seed=seed)
    seconds = time.time() - started
    labels = folder.labels[indices]
    paths = [folder.paths[i] for i in indices]
    title = f"t-SNE of {len(indices)} images, {stage}"
    plot_tsne(embeddings, labels, folder.class_names, f"{stem}.png", title=title, points=points)
    plot_tsne_interactive(embeddings, labels, folder.class_names, paths, f"{stem}.html", title=title,
                          points=points)
    return seconds


def plot_gallery(folder, embeddings, path, distance="euclidean", seed=0, queries=8):
    """A few seeded queries of `folder`, each with its 5 nearest other images and their
    `distance` to it (the distance the neighbours were found by)."""
    chosen = np.sort(np.random.default_rng(seed).permutation(len(folder))[:queries])
    found, distances = nearest_neighbours(embeddings[chosen], embeddings, k=6, distance=distance,
                                          return_distances=True)
    # Leave the query itself out of its own neighbours.
    kept = np.array([[i for i, n in enumerate(row) if n != query][:5] for row, query in zip(found, chosen)],
                    np.int64)
    plot_neighbour_gallery([folder.paths[i] for i in chosen], folder.labels[chosen], folder.paths,
                           folder.labels, np.take_along_axis(found, kept, 1), path,
                           class_names=folder.class_names, distances=np.take_along_axis(distances, kept, 1))


def write_class_tables(run_dir, labels, predicted, names, max_confusion_classes=300):
    """`per_class_accuracy.csv` and, for up to `max_confusion_classes` classes,
    `confusion_matrix.csv` (rows: true class, columns: predicted class)."""
    accuracy = per_class_accuracy(labels, predicted, len(names))
    counts = np.bincount(labels, minlength=len(names))
    atomic_write_csv(os.path.join(run_dir, "per_class_accuracy.csv"), ["class", "top1_accuracy", "queries"],
                     [[names[c], f"{accuracy[c]:.6f}", int(counts[c])] for c in range(len(names)) if counts[c]])
    if len(names) <= max_confusion_classes:
        matrix = confusion_matrix(labels, predicted, len(names))
        atomic_write_csv(os.path.join(run_dir, "confusion_matrix.csv"), ["true\\predicted", *names],
                         [[names[c], *(int(v) for v in matrix[c])] for c in range(len(names))])


def tsne_subsample(labels, max_points, max_classes=None, seed=0):
    """Sorted indices of a seeded subsample: at most `max_classes` classes (all if None), then at
    most `max_points` of their images. Fewer classes with all their images show clusters."""
    rng = np.random.default_rng(seed)
    candidates = np.arange(len(labels))
    if max_classes is not None:
        classes = rng.permutation(np.unique(labels))[:max_classes]
        candidates = candidates[np.isin(labels, classes)]
    return np.sort(rng.permutation(candidates)[:max_points])
