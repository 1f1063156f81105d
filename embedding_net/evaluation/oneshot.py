"""The official Omniglot one-shot task (Lake et al. 2015): 20 runs of 20 one-shot trials, each
query assigned its nearest support image."""

import json
import os

import numpy as np

from embedding_net.evaluation.distances import distance_matrix


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
