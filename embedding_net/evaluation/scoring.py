"""Every number a run reports about embeddings, gathered from the metric modules.

`score_split` evaluates a labelled split either against reference images of the same classes
(query vs reference) or, for classes never seen in training, leave-one-out within the split.
"""

import numpy as np

from embedding_net.evaluation.episodes import episode_accuracy
from embedding_net.evaluation.neighbours import class_distances, class_top_k_accuracy, nearest_classes
from embedding_net.evaluation.oneshot import evaluate_oneshot
from embedding_net.evaluation.retrieval import knn_vote_accuracy, retrieval_metrics
from embedding_net.evaluation.classification import nearest_centroid_accuracy
from embedding_net.evaluation.verification import pair_distances, sample_pairs, verification_metrics

EPISODE_WAYS = (20, 5)


def score_split(embeddings, labels, reference=None, distance="euclidean", knn_k=5, episodes=1000,
                seed=0, max_pairs=100000):
    """All metrics of one labelled set of embeddings.

    Args:
        embeddings: [Q, D] query embeddings.
        labels: [Q] integer labels.
        reference: `(embeddings, labels)` of reference images whose label ids are the same
            classes as `labels`, or None for leave-one-out within the queries.
        distance: `euclidean`, `squared_euclidean` or `cosine`.
        knn_k: k of the k-NN vote.
        episodes: few-shot episodes per N-way setting (20-way and 5-way 1-shot), 0 for none;
            only in leave-one-out, where the classes are new.
        seed: seed of the episodes and of the verification pairs.
        max_pairs: verification pairs sampled from the queries.

    Returns:
        `(metrics, predicted)`: a flat dict of numbers and the top-1 class of every query, for
        per-class accuracy and confusion matrices.
    """
    embeddings = np.asarray(embeddings, np.float32)
    labels = np.asarray(labels, np.int64)
    if reference is None:
        ref_embeddings, ref_labels, query_indices = embeddings, labels, np.arange(len(labels))
    else:
        ref_embeddings, ref_labels = np.asarray(reference[0], np.float32), np.asarray(reference[1], np.int64)
        query_indices = None
    num_classes = int(max(labels.max(), ref_labels.max())) + 1
    distances = class_distances(embeddings, ref_embeddings, ref_labels, num_classes, distance,
                                query_indices=query_indices)
    top_k = class_top_k_accuracy(distances, labels, (1, 5))
    metrics = {
        "protocol": "leave_one_out" if reference is None else "query_vs_reference",
        "queries": int(len(labels)),
        "top1_accuracy": top_k[1],
        "top5_accuracy": top_k[5],
    }
    retrieval = retrieval_metrics(embeddings, labels, *(reference or (None, None)), distance=distance)
    metrics.update({key: retrieval[key] for key in ("precision_at_1", "r_precision", "map_at_r")})
    # Small sets have fewer neighbours than k: vote among all of them (the key keeps k).
    available = len(ref_labels) - (1 if reference is None else 0)
    metrics[f"knn{knn_k}_accuracy"] = knn_vote_accuracy(embeddings, labels, *(reference or (None, None)),
                                                       k=max(1, min(knn_k, available)), distance=distance)
    metrics["centroid_accuracy"] = nearest_centroid_accuracy(embeddings, labels, *(reference or (None, None)),
                                                             distance=distance)
    if reference is None and episodes:
        eligible = int(np.sum(np.bincount(labels) >= 2))
        for n_way in EPISODE_WAYS:
            if eligible >= n_way:
                result = episode_accuracy(embeddings, labels, n_way, 1, episodes, seed=seed, distance=distance)
                metrics[f"episodes_{n_way}way_1shot"] = result["mean"]
                metrics[f"episodes_{n_way}way_1shot_ci95"] = result["ci95"]
    counts = np.bincount(labels)
    if np.any(counts >= 2) and np.count_nonzero(counts) >= 2:
        pairs = sample_pairs(labels, max_pairs=max_pairs, seed=seed)
        same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
        verification = verification_metrics(pair_distances(embeddings, pairs, distance), same)
        metrics.update({"roc_auc": verification["roc_auc"], "eer": verification["eer"],
                        "threshold": verification["threshold"],
                        "verification_accuracy": verification["accuracy"]})
    return metrics, nearest_classes(distances, 1)[:, 0]


def score_folders(val_folder, val_embeddings, train_folder, train_embeddings, distance="euclidean",
                  knn_k=5, episodes=1000, seed=0, dataset_root=None):
    """Every metric of a val split (see `score_split`), plus the official one-shot task when
    `dataset_root` holds one. Val images are queries against the train images when every val
    class appears in train, else leave-one-out within val (new classes, as in Omniglot).

    Returns:
        `(metrics, (labels, predicted, class_names))`, the val labels and top-1 predictions in
        the class ids of `class_names`.
    """
    reference = None
    if set(val_folder.class_names) <= set(train_folder.class_names):
        index = {name: i for i, name in enumerate(train_folder.class_names)}
        labels = np.array([index[val_folder.class_names[label]] for label in val_folder.labels])
        reference, names = (train_embeddings, train_folder.labels), train_folder.class_names
    else:
        labels, names = val_folder.labels, val_folder.class_names
    metrics, predicted = score_split(val_embeddings, labels, reference, distance, knn_k, episodes, seed)
    if dataset_root is not None:
        metrics.update(evaluate_oneshot(dataset_root, val_folder.paths, val_embeddings, distance) or {})
    return metrics, (labels, predicted, names)
