"""Retrieval metrics through an index, in bounded memory, and the recall of approximate backends.

`retrieval_metrics_via_index` gives the numbers of `embedding_net.evaluation.retrieval`
(precision@1, R-precision, MAP@R as in Musgrave et al. 2020, and leave-one-out k-NN accuracy)
for galleries far too large for a [queries x gallery] matrix: every image is a query against all
the others, its neighbours come from the index, and queries go in chunks sized so that a chunk
holds at most `max_entries` neighbours. With the exact backend the numbers are those of
`retrieval_metrics` / `knn_vote_accuracy`; with an approximate one they show what the
approximation costs.

Definitions, per query of class c with R = (images of c) - 1, its R nearest others ranked
(ties by id), rel(i) = 1 when the i-th is of class c, P(i) = precision of the first i:
precision@1 = rel(1), R-precision = P(R), MAP@R = (1/R) sum_{i<=R} P(i) rel(i). Queries with
R = 0 are skipped for these three (and counted); k-NN accuracy counts every query.
"""

import numpy as np

from embedding_net.index.base import EmbeddingIndex
from embedding_net.index.classes import vote


def _index_of(index_or_embeddings, labels, distance, backend, backend_options):
    if isinstance(index_or_embeddings, EmbeddingIndex):
        if labels is not None:
            raise ValueError("pass `labels=None` with an index: its own labels are used")
        return index_or_embeddings
    labels = np.asarray(labels)
    classes, dense = np.unique(labels, return_inverse=True)
    return EmbeddingIndex.build(index_or_embeddings, dense.astype(np.int64),
                                [str(c) for c in classes], distance=distance, backend=backend,
                                **backend_options)


def retrieval_metrics_via_index(index_or_embeddings, labels=None, knn_k=5, distance="euclidean",
                                backend="exact", max_entries=1 << 22, **backend_options):
    """Leave-one-out retrieval metrics of every image of an index against all the others.

    Args:
        index_or_embeddings: an `EmbeddingIndex` (its images that are not removed are the
            queries), or [N, D] embeddings from which one is built.
        labels: integer [N] labels of the embeddings; None with an index.
        knn_k: neighbours that vote for the k-NN accuracy.
        distance, backend, **backend_options: how to build the index from embeddings.
        max_entries: the most neighbours held at once (bounds memory).

    Returns:
        A dict: `precision_at_1`, `r_precision`, `map_at_r` (NaN when every query is skipped),
        `knn_accuracy`, `knn_k`, `queries`, `skipped_queries`, `backend`.
    """
    index = _index_of(index_or_embeddings, labels, distance, backend, backend_options)
    all_labels = np.asarray(index.labels)
    ids = np.flatnonzero(all_labels >= 0)
    own = all_labels[ids]
    r = index.class_counts[own] - 1
    ordering = np.argsort(r, kind="stable")  # chunks of similar R fetch similar numbers
    order, r_sorted = ids[ordering], r[ordering]
    scores = {}  # id -> (p@1, r-precision, map@r) for queries with R >= 1
    correct, begin = 0, 0
    k_vote = max(1, min(knn_k, len(ids) - 1))
    while begin < len(order):
        rows = max(1, max_entries // (max(int(r_sorted[begin]), k_vote) + 1))
        while rows > 1 and (max(int(r_sorted[min(len(order), begin + rows) - 1]), k_vote) + 1
                            ) * rows > max_entries:
            rows //= 2
        chunk, chunk_r = order[begin : begin + rows], r_sorted[begin : begin + rows]
        begin += len(chunk)
        fetch = min(index.count, int(max(chunk_r.max(), k_vote)) + 1)
        distances, found = _without_self(*index.search(index.vectors(chunk), fetch), chunk)
        neighbour_labels = np.where(found >= 0, all_labels[np.maximum(found, 0)], -1)
        winners = vote(neighbour_labels[:, :k_vote], distances[:, :k_vote])
        correct += int(np.sum(winners == all_labels[chunk]))
        ranked = chunk_r > 0
        if ranked.any():
            _score(scores, chunk[ranked], neighbour_labels[ranked], all_labels[chunk[ranked]],
                   chunk_r[ranked])
    values = np.array(list(scores.values())).reshape(-1, 3)
    means = values.mean(axis=0) if len(values) else np.full(3, np.nan)
    return {"precision_at_1": float(means[0]), "r_precision": float(means[1]),
            "map_at_r": float(means[2]), "knn_accuracy": correct / max(1, len(ids)),
            "knn_k": k_vote, "queries": len(values), "skipped_queries": len(ids) - len(values),
            "backend": index.backend}


def _without_self(distances, found, query_ids):
    """Drops each query's own id from its neighbours (or the farthest one when it is absent)."""
    is_self = found == query_ids[:, None]
    is_self[:, -1] |= ~is_self.any(axis=1)
    order = np.argsort(is_self, axis=1, kind="stable")[:, :-1]
    return np.take_along_axis(distances, order, 1), np.take_along_axis(found, order, 1)


def _score(scores, query_ids, neighbour_labels, query_labels, r):
    k = int(r.max())
    relevant = (neighbour_labels[:, :k] == query_labels[:, None]) & (np.arange(k) < r[:, None])
    hits = np.cumsum(relevant, axis=1)
    map_at_r = np.sum(relevant * hits / np.arange(1, k + 1), axis=1) / r
    for q, p1, rp, m in zip(query_ids, relevant[:, 0], hits[:, -1] / r, map_at_r):
        scores[int(q)] = (float(p1), float(rp), float(m))


def recall_at(approximate_ids, exact_ids, ks=(1, 10)):
    """{"recall_at_k": mean |approx top-k & exact top-k| / |exact top-k|} for each k of `ks`."""
    result = {}
    for k in ks:
        a, e = np.asarray(approximate_ids)[:, :k], np.asarray(exact_ids)[:, :k]
        hits = [len(set(x[x >= 0]) & set(y[y >= 0])) / max(1, int(np.sum(y >= 0)))
                for x, y in zip(a, e)]
        result[f"recall_at_{k}"] = float(np.mean(hits)) if hits else float("nan")
    return result


def recall_against_exact(approximate_index, exact_index, queries, ks=(1, 10)):
    """Recall@k of `approximate_index` against `exact_index` (same images, added in the same
    order) on `queries`: the fraction of the true k nearest that the approximate search finds."""
    if approximate_index.stored != exact_index.stored:
        raise ValueError(f"the indexes hold different images: {approximate_index.stored} and "
                         f"{exact_index.stored}")
    k = max(ks)
    return recall_at(approximate_index.search(queries, k)[1], exact_index.search(queries, k)[1], ks)


def query_metrics_via_index(index, queries, labels, knn_k=5, max_entries=1 << 22):
    """Retrieval metrics of `queries` (not in the index) against every image of `index`, the
    query-vs-reference numbers of `embedding_net.evaluation.retrieval` in bounded memory.

    Args:
        index: the gallery, an `EmbeddingIndex`.
        queries: [Q, D] embeddings.
        labels: [Q] class ids into `index.class_names` (every one a class of the index).
        knn_k: neighbours that vote for the k-NN accuracy.
        max_entries: the most neighbours held at once.

    Returns:
        A dict: `precision_at_1`, `r_precision`, `map_at_r` (R = the gallery images of the
        query's class; queries of a class without images are skipped), `knn_accuracy`, `knn_k`.
    """
    queries, labels = np.asarray(queries, np.float32), np.asarray(labels, np.int64)
    r = index.class_counts[labels]
    order = np.argsort(r, kind="stable")
    r_sorted = r[order]
    k_vote = max(1, min(knn_k, index.count))
    scores, correct, begin, all_labels = {}, 0, 0, np.asarray(index.labels)
    while begin < len(order):
        rows = max(1, max_entries // max(int(r_sorted[begin]), k_vote))
        while rows > 1 and max(int(r_sorted[min(len(order), begin + rows) - 1]), k_vote) * rows > max_entries:
            rows //= 2
        chunk, chunk_r = order[begin : begin + rows], r_sorted[begin : begin + rows]
        begin += len(chunk)
        distances, found = index.search(queries[chunk], min(index.count, int(max(chunk_r.max(), k_vote))))
        neighbour_labels = np.where(found >= 0, all_labels[np.maximum(found, 0)], -1)
        winners = vote(neighbour_labels[:, :k_vote], distances[:, :k_vote])
        correct += int(np.sum(winners == labels[chunk]))
        ranked = chunk_r > 0
        if ranked.any():
            _score(scores, chunk[ranked], neighbour_labels[ranked], labels[chunk[ranked]], chunk_r[ranked])
    values = np.array(list(scores.values())).reshape(-1, 3)
    means = values.mean(axis=0) if len(values) else np.full(3, np.nan)
    return {"precision_at_1": float(means[0]), "r_precision": float(means[1]),
            "map_at_r": float(means[2]), "knn_accuracy": correct / max(1, len(labels)), "knn_k": k_vote}
