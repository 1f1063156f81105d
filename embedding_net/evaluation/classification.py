"""Classification figures of embeddings, in NumPy: nearest class centroid, per-class accuracy
and the confusion matrix.

A class centroid is the unit-length mean of the class's embeddings (`class_centroids`, the one
definition of the package: the encodings store these).
"""

import numpy as np

from embedding_net.evaluation.distances import distance_matrix, paired_distances, unit_rows
from embedding_net.evaluation.neighbours import check_positive, evaluation_inputs, prediction_inputs


def class_centroids(embeddings, labels, num_classes):
    """Unit-length mean embedding of each class, float32 [C, D] (zeros for an empty class)."""
    embeddings = np.asarray(embeddings)
    sums = np.zeros((num_classes, embeddings.shape[1]), np.float64)
    np.add.at(sums, np.asarray(labels), embeddings)
    return unit_rows(sums)


def nearest_centroid_predict(query_embeddings, reference_embeddings, reference_labels,
                             distance="euclidean", chunk_size=1024, exclude_self=False):
    """Label of the nearest unit-length class mean of the references (ties: lower label).

    Centroids are `class_centroids` of the references. With
    `exclude_self` (queries are the references) query i is compared with its own class's mean
    without it; a class with one image then has no centroid for that query.
    """
    queries, references, labels = prediction_inputs(query_embeddings, reference_embeddings,
                                                  reference_labels, distance, chunk_size,
                                                  exclude_self)
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), references.shape[1]), np.float64)
    np.add.at(sums, index, references)
    centroids = unit_rows(sums)
    predictions = np.empty(len(queries), np.int64)
    for begin in range(0, len(queries), chunk_size):
        block = distance_matrix(queries[begin : begin + chunk_size], centroids, distance)
        if exclude_self:
            rows = np.arange(begin, begin + len(block))
            own = unit_rows(sums[index[rows]] - references[rows])
            # Row-wise rather than distance_matrix: same definition, one pair per query.
            block[np.arange(len(rows)), index[rows]] = np.where(
                counts[index[rows]] > 1, paired_distances(queries[rows], own, distance), np.inf)
        predictions[begin : begin + len(block)] = classes[np.argmin(block, axis=1)]
    return predictions


def nearest_centroid_accuracy(query_embeddings, query_labels, reference_embeddings=None,
                              reference_labels=None, distance="euclidean", chunk_size=1024):
    """Fraction of queries whose `nearest_centroid_predict` label is theirs (None: LOO)."""
    queries, labels, references, reference_labels, loo = evaluation_inputs(
        query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
        distance)
    predicted = nearest_centroid_predict(queries, references, reference_labels, distance,
                                         chunk_size, loo)
    return float(np.mean(predicted == labels))


def _class_ids(true, predicted, num_classes):
    """int64 arrays of one length with values in [0, num_classes), or a `ValueError`."""
    check_positive("num_classes", num_classes)
    true, predicted = np.asarray(true), np.asarray(predicted)
    if true.shape != predicted.shape or true.ndim != 1:
        raise ValueError(f"`true` and `predicted` must be 1-D of one length. Received shapes: "
                         f"{true.shape} and {predicted.shape}")
    for name, ids in (("true", true), ("predicted", predicted)):
        if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0
                         or ids.max() >= num_classes):
            raise ValueError(f"`{name}` must hold integers in [0, {num_classes}). Received: "
                             f"{ids.dtype} in [{ids.min()}, {ids.max()}]")
    return true.astype(np.int64), predicted.astype(np.int64)


def per_class_accuracy(true, predicted, num_classes):
    """float64 [num_classes]: the accuracy on each class's queries; NaN for a class with none."""
    true, predicted = _class_ids(true, predicted, num_classes)
    queries = np.bincount(true, minlength=num_classes)
    correct = np.bincount(true[true == predicted], minlength=num_classes)
    return np.where(queries > 0, correct / np.maximum(queries, 1), np.nan)


def confusion_matrix(true, predicted, num_classes):
    """int64 [num_classes, num_classes]: rows are true classes, columns predicted (scikit-learn)."""
    from sklearn import metrics as sk_metrics  # imported here: scikit-learn takes a second to load

    true, predicted = _class_ids(true, predicted, num_classes)
    matrix = sk_metrics.confusion_matrix(true, predicted, labels=np.arange(num_classes))
    return matrix.astype(np.int64)
