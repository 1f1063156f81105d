"""Nearest-neighbour evaluation of embeddings, in NumPy, chunked over queries.

Distances between Q queries and N references are computed `chunk_size` queries at a time, so
memory stays O(chunk_size x N) however many embeddings there are. A class's distance to a query
is the distance to its nearest image; "top-k accuracy" is the fraction of queries whose true
class is among the k nearest classes (top-1 is plain nearest-neighbour accuracy).
"""

import json
import os

import numpy as np

# The distance names of `embedding_net.mining.distances` too; they live here, with the NumPy side,
# so that classification at test time never has to import TensorFlow.
DISTANCES = ("euclidean", "squared_euclidean", "cosine")


def check_distance(distance):
    """Raises a `ValueError` echoing `distance` unless it names a known distance."""
    if distance not in DISTANCES:
        raise ValueError(
            f"`distance` must be one of {', '.join(DISTANCES)}. Received: {distance!r}"
        )


def distance_matrix(queries, references, distance="euclidean", reference_squared_norms=None):
    """float32 [Q, N] distances between rows, with the definitions of `embedding_net.mining.distances`.

    `reference_squared_norms` [N] (`squared_norms(references)`) may be given to save a pass over
    the references, which dominates the cost of a single query against many references.
    """
    check_distance(distance)
    queries = np.asarray(queries, np.float32)
    references = np.asarray(references, np.float32)
    if reference_squared_norms is None:
        reference_squared_norms = squared_norms(references)
    products = queries @ references.T
    if distance == "cosine":
        products /= np.maximum(np.sqrt(squared_norms(queries)), 1e-6)[:, None]
        products /= np.maximum(np.sqrt(reference_squared_norms), 1e-6)[None, :]
        return np.maximum(1.0 - products, 0.0, out=products)
    squared = squared_norms(queries)[:, None] - 2.0 * products + reference_squared_norms[None, :]
    squared = np.maximum(squared, 0.0, out=squared)
    return squared if distance == "squared_euclidean" else np.sqrt(squared, out=squared)


def squared_norms(vectors):
    """float32 [N] squared L2 norms of the rows of [N, D], without a temporary copy."""
    vectors = np.asarray(vectors, np.float32)
    return np.einsum("ij,ij->i", vectors, vectors)


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
    """The k nearest class ids per query [Q, k], nearest first (ties: lower class id first)."""
    return np.argsort(class_distance, axis=1, kind="stable")[:, :k]


def top_k_accuracy(class_distance, true_labels, ks=(1, 5)):
    """{k: fraction of queries whose true class is among their k nearest classes}."""
    true_labels = np.asarray(true_labels)
    ranked = nearest_classes(class_distance, max(ks))
    # A true class without any usable reference (+inf) is never "found", whatever k is.
    in_range = (true_labels >= 0) & (true_labels < class_distance.shape[1])
    reachable = in_range & np.isfinite(
        class_distance[np.arange(len(true_labels)), np.where(in_range, true_labels, 0)])
    return {k: float(np.mean(np.any(ranked[:, :k] == true_labels[:, None], axis=1) & reachable))
            for k in ks}


def oneshot_accuracy(runs, embedding_of, distance="euclidean"):
    """Accuracy on one-shot runs: each query is assigned its nearest support image.

    Args:
        runs: list of `{"support": [key, ...], "trials": [{"query": key, "answer": key}, ...]}`.
        embedding_of: mapping from key to embedding [D].
        distance: the distance used to find the nearest support image.

    Returns:
        `(accuracy, trials)`.
    """
    correct = trials = 0
    for run in runs:
        support = np.stack([embedding_of[key] for key in run["support"]])
        queries = np.stack([embedding_of[t["query"]] for t in run["trials"]])
        nearest = np.argmin(distance_matrix(queries, support, distance), axis=1)
        answers = [run["support"].index(t["answer"]) for t in run["trials"]]
        correct += int(np.sum(nearest == np.asarray(answers)))
        trials += len(answers)
    return (correct / trials if trials else float("nan")), trials


def load_oneshot_runs(path):
    """Reads a one-shot task file (`{"runs": [...]}`, paths relative to the dataset root)."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["runs"]


def evaluate_oneshot(root, val_paths, val_embeddings, distance="euclidean"):
    """The official one-shot accuracy when `root/oneshot_runs.json` exists, else None."""
    path = os.path.join(root, "oneshot_runs.json")
    if not os.path.isfile(path):
        return None
    embedding_of = {os.path.relpath(p, root).replace(os.sep, "/"): e
                    for p, e in zip(val_paths, val_embeddings)}
    runs = [run for run in load_oneshot_runs(path)
            if all(k in embedding_of for k in run["support"] + [t["query"] for t in run["trials"]])]
    accuracy, trials = oneshot_accuracy(runs, embedding_of, distance)
    return {"oneshot_accuracy": accuracy, "oneshot_trials": trials} if trials else None
