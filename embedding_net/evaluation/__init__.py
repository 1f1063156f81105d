"""Evaluation in NumPy (no TensorFlow): distances by name, nearest classes, retrieval metrics
(P@1, R-precision, MAP@R, k-NN), classification figures, few-shot episodes, pair verification,
the Omniglot one-shot task, and `score_split`, which gathers what a run reports.

    from embedding_net.evaluation import retrieval_metrics
    retrieval_metrics(embeddings, labels)   # leave-one-out
"""

from embedding_net.evaluation.classification import (
    class_centroids, confusion_matrix, nearest_centroid_accuracy, nearest_centroid_predict, per_class_accuracy)
from embedding_net.evaluation.distances import (
    check_distance, distance_matrix, get_distance, list_distances, paired_distances, register_distance, unit_rows)
from embedding_net.evaluation.episodes import episode_accuracy, sample_episodes
from embedding_net.evaluation.neighbours import class_distances, class_top_k_accuracy, nearest_classes, smallest_k
from embedding_net.evaluation.oneshot import evaluate_oneshot, oneshot_accuracy
from embedding_net.evaluation.retrieval import knn_predict, knn_vote_accuracy, retrieval_metrics, top_k_accuracy
from embedding_net.evaluation.scoring import score_folders, score_split
from embedding_net.evaluation.verification import pair_distances, sample_pairs, verification_metrics

__all__ = ["check_distance", "class_centroids", "class_distances", "class_top_k_accuracy", "confusion_matrix",
           "distance_matrix", "episode_accuracy", "evaluate_oneshot", "get_distance", "knn_predict",
           "knn_vote_accuracy", "list_distances", "nearest_centroid_accuracy", "nearest_centroid_predict",
           "nearest_classes", "oneshot_accuracy", "pair_distances", "paired_distances", "per_class_accuracy",
           "register_distance", "retrieval_metrics", "sample_episodes", "sample_pairs", "score_folders",
           "score_split", "smallest_k", "top_k_accuracy", "unit_rows", "verification_metrics"]
