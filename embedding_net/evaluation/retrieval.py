"""Retrieval and classification metrics of embeddings, in NumPy, chunked over queries.

Every function takes plain arrays: embeddings [N, D] and integer labels [N]. Passing no
references means leave-one-out on the queries: each query is matched against all the other
queries, never itself. Distances come from `embedding_net.evaluation.nearest.distance_matrix`,
`chunk_size` queries at a time in float32, so memory stays O(chunk_size x N).

Ties in distance are broken by reference index, lower first, everywhere: the rankings are
deterministic and a duplicate of the query does not count as better than an earlier reference.
Few-shot episodes are in `embedding_net.evaluation.episodes`, pair verification in
`embedding_net.evaluation.verification`.
"""

import numpy as np
from sklearn import metrics as sk_metrics

from embedding_net.mining.distances import check_distance
from embedding_net.evaluation.nearest import class_distances, distance_matrix
from embedding_net.evaluation.nearest import top_k_accuracy as _top_k_of_class_distances


def check_positive(name, value):
    """Raises a `ValueError` echoing `value` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be an integer >= 1. Received: {value!r}")


def check_embeddings(embeddings, labels=None, name="embeddings"):
    """float32 [N, D] embeddings (and int64 [N] labels), or a `ValueError` naming the problem."""
    embeddings = np.asarray(embeddings, np.float32)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"`{name}` must be 2-D [N, D] with N >= 1. Received shape: "
                         f"{embeddings.shape}")
    if labels is None:
        return embeddings
    labels = np.asarray(labels)
    if labels.shape != (len(embeddings),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"The labels of `{name}` must be integers of shape ({len(embeddings)},)."
                         f" Received: {labels.dtype} {labels.shape}")
    return embeddings, labels.astype(np.int64)


def _inputs(query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
            distance):
    """Validated arrays and whether the evaluation is leave-one-out."""
    check_distance(distance)  # now, not only once a distance is computed
    check_positive("chunk_size", chunk_size)
    queries, query_labels = check_embeddings(query_embeddings, query_labels, "query_embeddings")
    if (reference_embeddings is None) != (reference_labels is None):
        raise ValueError("Pass both `reference_embeddings` and `reference_labels`, or neither. "
                         f"Received: {type(reference_embeddings).__name__} and "
                         f"{type(reference_labels).__name__}")
    if reference_embeddings is None:
        return queries, query_labels, queries, query_labels, True
    references, reference_labels = check_embeddings(reference_embeddings, reference_labels,
                                                    "reference_embeddings")
    if references.shape[1] != queries.shape[1]:
        raise ValueError(f"Queries and references must have the same dimension. Received: "
                         f"{queries.shape[1]} and {references.shape[1]}")
    return queries, query_labels, references, reference_labels, False


def _predict_inputs(query_embeddings, reference_embeddings, reference_labels, distance,
                    chunk_size, exclude_self):
    """Validated queries, references and reference labels of a `*_predict` function."""
    check_distance(distance)
    check_positive("chunk_size", chunk_size)
    queries = check_embeddings(query_embeddings, name="query_embeddings")
    references, labels = check_embeddings(reference_embeddings, reference_labels,
                                          "reference_embeddings")
    if exclude_self and len(queries) != len(references):
        raise ValueError("`exclude_self` needs the queries to be the references. Received: "
                         f"{len(queries)} queries and {len(references)} references")
    return queries, references, labels


def _blocks(queries, references, distance, chunk_size, leave_one_out, rows=None):
    """Yields `(query indices, float32 distance block)`, the query's own column at +inf in LOO."""
    rows = np.arange(len(queries)) if rows is None else rows
    for begin in range(0, len(rows), chunk_size):
        chunk = rows[begin : begin + chunk_size]
        block = distance_matrix(queries[chunk], references, distance)
        if leave_one_out:
            block[np.arange(len(chunk)), chunk] = np.inf
        yield chunk, block


def _smallest(block, k):
    """Columns of the k smallest entries of each row [rows, k], nearest first, ties by column.

    A partial sort: the k-th smallest value of each row bounds the candidates, and only those
    (k per row, more where values tie with the k-th) are sorted by (distance, column).
    """
    kth = np.partition(block, k - 1, axis=1)[:, k - 1]
    rows, cols = np.nonzero(block <= kth[:, None])
    order = np.lexsort((cols, block[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, np.arange(len(block)))[rows]
    return cols[rank < k].reshape(len(block), k)


def retrieval_metrics(query_embeddings, query_labels, reference_embeddings=None,
                      reference_labels=None, distance="euclidean", chunk_size=1024):
    """Precision@1, R-precision and MAP@R, as in Musgrave et al. 2020 and pytorch-metric-learning.

    For a query of class c, R is the number of references of class c (minus the query itself in
    leave-one-out) and the R nearest references are ranked (ties by reference index). With
    rel(i) = 1 when the i-th is of class c and P(i) the fraction of the first i that are:
    precision@1 = rel(1), R-precision = P(R), MAP@R = (1/R) sum_{i<=R} P(i) rel(i). Each is
    averaged over the queries. Queries with R = 0 (no other image of their class) are skipped,
    as pytorch-metric-learning skips "lone" queries; unlike it, R is not capped at 1023.

    Args:
        query_embeddings: [Q, D].
        query_labels: integer [Q].
        reference_embeddings: [N, D], or None for leave-one-out on the queries.
        reference_labels: integer [N], or None.
        distance: `euclidean`, `squared_euclidean` or `cosine`.
        chunk_size: queries per distance block.

    Returns:
        A dict with `precision_at_1`, `r_precision`, `map_at_r` (NaN when every query is
        skipped), `queries` (the number evaluated) and `skipped_queries`.
    """
    queries, query_labels, references, reference_labels, loo = _inputs(
        query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
        distance)
    classes, counts = np.unique(reference_labels, return_counts=True)
    position = np.minimum(np.searchsorted(classes, query_labels), len(classes) - 1)
    r = np.where(classes[position] == query_labels, counts[position], 0) - int(loo)
    # Chunks of queries with similar R: each chunk ranks max(R) neighbours, so one big class
    # would otherwise make every chunk rank that many.
    evaluated = np.nonzero(r > 0)[0]
    evaluated = evaluated[np.argsort(r[evaluated], kind="stable")]
    # Per-query scores, averaged once at the end, so that the chunking cannot change rounding.
    scores = np.empty((len(queries), 3))
    for chunk, block in _blocks(queries, references, distance, chunk_size, loo, evaluated):
        r_chunk = r[chunk]
        k = int(r_chunk.max())
        relevant = reference_labels[_smallest(block, k)] == query_labels[chunk, None]
        relevant &= np.arange(k) < r_chunk[:, None]  # rank > R does not count
        hits = np.cumsum(relevant, axis=1)
        scores[chunk] = np.stack([relevant[:, 0], hits[:, -1] / r_chunk,
                                  np.sum(relevant * hits / np.arange(1, k + 1), axis=1) / r_chunk],
                                 axis=1)
    means = scores[evaluated].mean(axis=0) if len(evaluated) else np.full(3, np.nan)
    return {"precision_at_1": float(means[0]), "r_precision": float(means[1]),
            "map_at_r": float(means[2]), "queries": int(len(evaluated)),
            "skipped_queries": int(len(queries) - len(evaluated))}


def knn_predict(query_embeddings, reference_embeddings, reference_labels, k=5,
                distance="euclidean", chunk_size=1024, exclude_self=False):
    """Majority vote of the k nearest references (ties in distance by reference index).

    A tie between classes with equally many votes goes to the class whose voters have the
    smaller summed distance, then to the class of the nearer neighbour.

    Args:
        query_embeddings: [Q, D].
        reference_embeddings: [N, D].
        reference_labels: integer [N].
        k: neighbours that vote; at most the number of references (N - 1 with `exclude_self`).
        distance: `euclidean`, `squared_euclidean` or `cosine`.
        chunk_size: queries per distance block.
        exclude_self: leave-one-out: the queries are the references, query i never votes for
            itself.

    Returns:
        int64 [Q] predicted labels.
    """
    check_positive("k", k)
    queries, references, labels = _predict_inputs(query_embeddings, reference_embeddings,
                                                  reference_labels, distance, chunk_size,
                                                  exclude_self)
    available = len(references) - int(exclude_self)
    if k > available:
        raise ValueError(f"`k` must be <= the {available} references available. Received: {k}")
    predictions = np.empty(len(queries), np.int64)
    for chunk, block in _blocks(queries, references, distance, chunk_size, exclude_self):
        nearest = _smallest(block, k)
        voters = labels[nearest]
        spent = np.take_along_axis(block, nearest, axis=1).astype(np.float64)
        same = voters[:, :, None] == voters[:, None, :]
        votes = same.sum(axis=2)
        spread = np.where(votes == votes.max(axis=1, keepdims=True), (same * spent[:, None, :])
                          .sum(axis=2), np.inf)
        # Voters of one class share one spread; argmax picks the first, i.e. nearest, of them.
        winner = np.argmax(spread == spread.min(axis=1, keepdims=True), axis=1)
        predictions[chunk] = voters[np.arange(len(chunk)), winner]
    return predictions


def knn_vote_accuracy(query_embeddings, query_labels, reference_embeddings=None,
                      reference_labels=None, k=5, distance="euclidean", chunk_size=1024):
    """Fraction of queries whose `knn_predict` vote is their label (references None: LOO)."""
    queries, labels, references, reference_labels, loo = _inputs(
        query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
        distance)
    predicted = knn_predict(queries, references, reference_labels, k, distance, chunk_size, loo)
    return float(np.mean(predicted == labels))


def paired_distances(a, b, distance="euclidean"):
    """float32 [P]: distance between row i of `a` and row i of `b`, defined as in
    `distance_matrix` (which would compute all P x P pairs to get these P)."""
    check_distance(distance)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if distance == "cosine":
        # Same 1e-6 norm floor as distance_matrix, so that zero vectors agree.
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-6)
        b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-6)
        return np.maximum(1.0 - np.sum(a * b, axis=1), 0.0)
    squared = np.sum((a - b) ** 2, axis=1)
    return squared if distance == "squared_euclidean" else np.sqrt(squared)


def _unit(x):
    """Rows scaled to length 1; the 1e-12 floor of `encodings.class_centroids` keeps 0 at 0."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_centroid_predict(query_embeddings, reference_embeddings, reference_labels,
                             distance="euclidean", chunk_size=1024, exclude_self=False):
    """Label of the nearest unit-length class mean of the references (ties: lower label).

    Centroids are normalised like `embedding_net.inference.encodings.class_centroids`. With
    `exclude_self` (queries are the references) query i is compared with its own class's mean
    without it; a class with one image then has no centroid for that query.
    """
    queries, references, labels = _predict_inputs(query_embeddings, reference_embeddings,
                                                  reference_labels, distance, chunk_size,
                                                  exclude_self)
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    sums = np.zeros((len(classes), references.shape[1]), np.float64)
    np.add.at(sums, index, references)
    centroids = _unit(sums).astype(np.float32)
    predictions = np.empty(len(queries), np.int64)
    for begin in range(0, len(queries), chunk_size):
        block = distance_matrix(queries[begin : begin + chunk_size], centroids, distance)
        if exclude_self:
            rows = np.arange(begin, begin + len(block))
            own = _unit(sums[index[rows]] - references[rows])
            # Row-wise rather than distance_matrix: same definition, one pair per query.
            block[np.arange(len(rows)), index[rows]] = np.where(
                counts[index[rows]] > 1, paired_distances(queries[rows], own, distance), np.inf)
        predictions[begin : begin + len(block)] = classes[np.argmin(block, axis=1)]
    return predictions


def nearest_centroid_accuracy(query_embeddings, query_labels, reference_embeddings=None,
                              reference_labels=None, distance="euclidean", chunk_size=1024):
    """Fraction of queries whose `nearest_centroid_predict` label is theirs (None: LOO)."""
    queries, labels, references, reference_labels, loo = _inputs(
        query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
        distance)
    predicted = nearest_centroid_predict(queries, references, reference_labels, distance,
                                         chunk_size, loo)
    return float(np.mean(predicted == labels))


def top_k_accuracy(query_embeddings, query_labels, reference_embeddings=None,
                   reference_labels=None, ks=(1, 5), distance="euclidean", chunk_size=1024):
    """{k: fraction of queries whose class is among the k nearest}, a class's distance being
    that of its nearest image (`embedding_net.evaluation.nearest.top_k_accuracy`; None: LOO)."""
    queries, labels, references, reference_labels, loo = _inputs(
        query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
        distance)
    # Map arbitrary integer labels to dense ids; a query class absent from the references
    # gets id C, which no column has, so it can never be right.
    classes, dense = np.unique(reference_labels, return_inverse=True)
    position = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
    true = np.where(classes[position] == labels, position, len(classes))
    distances = class_distances(queries, references, dense, len(classes), distance,
                                np.arange(len(queries)) if loo else None, chunk_size)
    # evaluation.top_k_accuracy never counts a class at +inf (no reference) or out of range.
    return _top_k_of_class_distances(distances, true, ks)


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
    true, predicted = _class_ids(true, predicted, num_classes)
    matrix = sk_metrics.confusion_matrix(true, predicted, labels=np.arange(num_classes))
    return matrix.astype(np.int64)
