"""Nearest neighbours in NumPy, chunked over queries: the inputs every metric checks, blocks of
distances, the k smallest of each row (the one top-k of the package), and the distance from a
query to each class.

Distances between Q queries and N references are computed `chunk_size` queries at a time, so
memory stays O(chunk_size x N) however many embeddings there are. A class's distance to a query
is the distance to its nearest image. Ties in distance are broken by reference index, lower
first, everywhere: the rankings are deterministic.
"""

import numpy as np

from embedding_net.evaluation.distances import check_distance, distance_matrix, squared_norms


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


def evaluation_inputs(query_embeddings, query_labels, reference_embeddings, reference_labels, chunk_size,
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


def prediction_inputs(query_embeddings, reference_embeddings, reference_labels, distance,
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


def distance_blocks(queries, references, distance, chunk_size, leave_one_out, rows=None):
    """Yields `(query indices, float32 distance block)`, the query's own column at +inf in LOO."""
    rows = np.arange(len(queries)) if rows is None else rows
    for begin in range(0, len(rows), chunk_size):
        chunk = rows[begin : begin + chunk_size]
        block = distance_matrix(queries[chunk], references, distance)
        if leave_one_out:
            block[np.arange(len(chunk)), chunk] = np.inf
        yield chunk, block


def smallest_k(block, k):
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


def class_distances(queries, references, reference_labels, num_classes, distance="euclidean",
                    query_indices=None, chunk_size=1024, reference_squared_norms=None):
    """Distance from each query to the nearest reference image of every class.

    Args:
        queries: [Q, D] embeddings.
        references: [N, D] embeddings.
        reference_labels: [N] class ids in [0, num_classes).
        num_classes: C.
        distance: `euclidean`, `squared_euclidean` or `cosine`.
        query_indices: for leave-one-out, the index in `references` of each query (that
            reference is ignored for that query), or None.
        chunk_size: queries per block.
        reference_squared_norms: optional [N] squared L2 norms of `references` (see `distance_matrix`).

    Returns:
        float32 [Q, C]; +inf for a class with no usable reference.
    """
    reference_labels = np.asarray(reference_labels)
    references = np.asarray(references, np.float32)
    position = np.arange(len(reference_labels))
    # Saved encodings are sorted by class already: then no copy of the references is made,
    # which is most of the cost of classifying one image against 100,000 of them.
    if np.any(reference_labels[1:] < reference_labels[:-1]):
        order = np.argsort(reference_labels, kind="stable")
        reference_labels, references = reference_labels[order], references[order]
        position[order] = np.arange(len(order))
        reference_squared_norms = None if reference_squared_norms is None else np.asarray(reference_squared_norms)[order]
    if reference_squared_norms is None:
        reference_squared_norms = squared_norms(references)
    starts = np.flatnonzero(np.r_[True, reference_labels[1:] != reference_labels[:-1]]) if len(
        reference_labels) else np.zeros(0, np.int64)
    present = reference_labels[starts]
    result = np.full((len(queries), num_classes), np.inf, np.float32)
    for begin in range(0, len(queries), chunk_size):
        block = distance_matrix(queries[begin : begin + chunk_size], references, distance, reference_squared_norms)
        if query_indices is not None:
            rows = np.arange(len(block))
            block[rows, position[np.asarray(query_indices)[begin : begin + chunk_size]]] = np.inf
        result[begin : begin + len(block)][:, present] = np.minimum.reduceat(block, starts, axis=1)
    return result


def nearest_classes(class_distance, k):
    """The k nearest class ids per query [Q, min(k, C)], nearest first (ties: lower class id first)."""
    return smallest_k(np.asarray(class_distance), min(k, np.shape(class_distance)[1]))


def class_top_k_accuracy(class_distance, true_labels, ks=(1, 5)):
    """{k: fraction of queries whose true class is among their k nearest classes}."""
    true_labels = np.asarray(true_labels)
    ranked = nearest_classes(class_distance, max(ks))
    # A true class without any usable reference (+inf) is never "found", whatever k is.
    in_range = (true_labels >= 0) & (true_labels < class_distance.shape[1])
    reachable = in_range & np.isfinite(
        class_distance[np.arange(len(true_labels)), np.where(in_range, true_labels, 0)])
    return {k: float(np.mean(np.any(ranked[:, :k] == true_labels[:, None], axis=1) & reachable))
            for k in ks}
