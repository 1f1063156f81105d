"""Class answers from neighbours only: nearest classes, k-NN vote, classification.

The project's rule (`embedding_net.evaluation.nearest.class_distances`) is that a class's
distance to a query is the distance to the class's nearest image. So the top-k classes of a query
are the first k distinct classes met walking its neighbours nearest first, each at the distance
where it is first met: no [queries x classes] matrix is ever needed, only enough neighbours.

How many neighbours: `candidates` (default max(64, 16 x top_k)) first; the queries that met fewer
than `top_k` distinct classes search again with four times as many, until they have `top_k`, or
`max_candidates` (default: no cap) or every stored image was fetched. With the exact backend the
answer is then exactly the project's; with an approximate one it is exact whenever the backend
finds the true nearest image of each answered class, which is what its recall@k measures: the
nearest classes are found reliably, the 4th and 5th less so when they are far and nearly tied.
The default fetch is large enough for the graph backends' search to reach them: on Omniglot
embeddings, 8 x top_k neighbours gave 98.3% of top-5 lists equal to exact search's, 16 x top_k
99.6-99.8% (`python bench/search_classes.py`). A cap
bounds the work for a query that sits among thousands of images of one class, at the price of
fewer than `top_k` classes for that query.
"""

import numpy as np

UNKNOWN = "unknown"


def _first_classes(labels_of, distances, top_k):
    """(class ids [Q, top_k], distances [Q, top_k], found [Q]) of sorted neighbour rows; -1 pads."""
    rows, width = labels_of.shape
    valid = labels_of >= 0
    keys = np.where(valid, np.arange(rows)[:, None] * (labels_of.max(initial=0) + 1) + labels_of,
                    -1).ravel()
    _, first = np.unique(keys, return_index=True)  # first occurrence of each (row, class)
    first = np.sort(first[keys[first] >= 0])  # row-major order: by row, then by rank
    row = first // width
    rank = np.arange(len(first)) - np.searchsorted(row, row)
    keep = rank < top_k
    classes = np.full((rows, top_k), -1, np.int64)
    near = np.full((rows, top_k), np.inf, np.float32)
    classes[row[keep], rank[keep]] = labels_of.ravel()[first[keep]]
    near[row[keep], rank[keep]] = distances.ravel()[first[keep]]
    return classes, near, np.bincount(row[keep], minlength=rows)


def nearest_classes(index, queries, top_k=5, candidates=None, max_candidates=None,
                    query_rows=1024):
    """Per query, a list of the `top_k` nearest `(class_name, distance)`, nearest first.

    Queries go `query_rows` at a time, so memory is O(query_rows x neighbours fetched).
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be an integer >= 1. Received: {top_k!r}")
    queries = np.asarray(queries, np.float32).reshape(-1, index.dimension)
    labels = index.labels
    reachable = min(top_k, int(np.count_nonzero(index.class_counts)))
    cap = index.stored if max_candidates is None else min(int(max_candidates), index.stored)
    first_fetch = max(1, min(cap, candidates or max(64, 16 * top_k)))
    names, answers = index.class_names, []
    for begin in range(0, len(queries), query_rows):
        chunk = queries[begin : begin + query_rows]
        classes = np.full((len(chunk), top_k), -1, np.int64)
        near = np.full((len(chunk), top_k), np.inf, np.float32)
        todo, fetch = np.arange(len(chunk)), first_fetch
        while len(todo) and reachable:
            distances, ids = index.search(chunk[todo], fetch)
            found_classes, found_near, found = _first_classes(
                np.where(ids >= 0, labels[np.maximum(ids, 0)], -1), distances, top_k)
            classes[todo], near[todo] = found_classes, found_near
            if fetch >= cap:
                break
            todo, fetch = todo[found < reachable], min(cap, fetch * 4)
        answers += [[(names[c], float(d)) for c, d in zip(row_c, row_d) if c >= 0]
                    for row_c, row_d in zip(classes, near)]
    return answers


def vote(voters, distances):
    """Winning class id per row of k-NN voters [Q, k] (-1: no voter): most votes, then smaller
    summed distance of the voters, then the nearer neighbour (`evaluation.retrieval.knn_predict`).
    Rows without a voter get -1."""
    valid = voters >= 0
    same = (voters[:, :, None] == voters[:, None, :]) & valid[:, None, :]
    votes = np.where(valid, same.sum(axis=2), -1)
    spent = np.where(same, np.asarray(distances, np.float64)[:, None, :], 0.0).sum(axis=2)
    spread = np.where(valid & (votes == votes.max(axis=1, keepdims=True)), spent, np.inf)
    winner = np.argmax(spread == spread.min(axis=1, keepdims=True), axis=1)
    return np.where(valid.any(axis=1), voters[np.arange(len(voters)), winner], -1)


def knn_vote(index, queries, k=5):
    """Per query, the class name its k nearest images vote for (`vote`'s tie rules)."""
    if index.count == 0:
        raise ValueError("the index is empty: nothing can vote")
    distances, ids = index.search(queries, k)
    winners = vote(np.where(ids >= 0, index.labels[np.maximum(ids, 0)], -1), distances)
    return [index.class_names[w] for w in winners]


def classify(index, queries, top_k=5, threshold=None):
    """Per query a dict: `prediction` (nearest class, or `unknown` when its distance is above
    `threshold`; None trusts every answer), `distance` (to that class) and `nearest` (the
    `top_k` `(class_name, distance)`), as `embedding_net.inference.prediction` reports them."""
    if index.count == 0:
        raise ValueError("the index is empty: nothing to classify against")
    rows = []
    for nearest in nearest_classes(index, queries, top_k):
        name, distance = nearest[0]
        known = threshold is None or distance <= threshold
        rows.append({"prediction": name if known else UNKNOWN, "distance": distance,
                     "nearest": nearest})
    return rows
