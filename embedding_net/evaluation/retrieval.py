"""Retrieval metrics of embeddings, in NumPy, chunked over queries: precision@1, R-precision,
MAP@R, k-NN votes and top-k accuracy.

Every function takes plain arrays: embeddings [N, D] and integer labels [N]. Passing no
references means leave-one-out on the queries: each query is matched against all the other
queries, never itself. Few-shot episodes are in `embedding_net.evaluation.episodes`, pair
verification in `embedding_net.evaluation.verification`, centroids and per-class figures in
`embedding_net.evaluation.classification`.
"""

import numpy as np

from embedding_net.evaluation.neighbours import (
    check_positive, class_distances, class_top_k_accuracy, distance_blocks, evaluation_inputs,
    prediction_inputs, smallest_k)


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
    queries, query_labels, references, reference_labels, loo = evaluation_inputs(
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
    for chunk, block in distance_blocks(queries, references, distance, chunk_size, loo, evaluated):
        r_chunk = r[chunk]
        k = int(r_chunk.max())
        relevant = reference_labels[smallest_k(block, k)] == query_labels[chunk, None]
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
    queries, references, labels = prediction_inputs(query_embeddings, reference_embeddings,
                                                  reference_labels, distance, chunk_size,
                                                  exclude_self)
    available = len(references) - int(exclude_self)
    if k > available:
        raise ValueError(f"`k` must be <= the {available} references available. Received: {k}")
    predictions = np.empty(len(queries), np.int64)
    for chunk, block in distance_blocks(queries, references, distance, chunk_size, exclude_self):
        nearest = smallest_k(block, k)
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
    queries, labels, references, reference_labels, loo = evaluation_inputs(
        query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
        distance)
    predicted = knn_predict(queries, references, reference_labels, k, distance, chunk_size, loo)
    return float(np.mean(predicted == labels))


def top_k_accuracy(query_embeddings, query_labels, reference_embeddings=None,
                   reference_labels=None, ks=(1, 5), distance="euclidean", chunk_size=1024):
    """{k: fraction of queries whose class is among the k nearest}, a class's distance being
    that of its nearest image (`class_top_k_accuracy`; None: LOO)."""
    queries, labels, references, reference_labels, loo = evaluation_inputs(
        query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
        distance)
    # Map arbitrary integer labels to dense ids; a query class absent from the references
    # gets id C, which no column has, so it can never be right.
    classes, dense = np.unique(reference_labels, return_inverse=True)
    position = np.minimum(np.searchsorted(classes, labels), len(classes) - 1)
    true = np.where(classes[position] == labels, position, len(classes))
    distances = class_distances(queries, references, dense, len(classes), distance,
                                np.arange(len(queries)) if loo else None, chunk_size)
    # class_top_k_accuracy never counts a class at +inf (no reference) or out of range.
    return class_top_k_accuracy(distances, true, ks)
