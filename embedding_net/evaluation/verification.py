"""Pair verification ("are these two images of one class?") from distances, in NumPy.

`sample_pairs` draws a balanced, seeded set of index pairs from a labelled set without ever
listing all N(N-1)/2 pairs, `pair_distances` measures them, and `verification_metrics` scores
the distances: ROC AUC, equal error rate, and the accuracy of the best distance threshold.
"""

import numpy as np

from embedding_net.evaluation.neighbours import check_embeddings, check_positive
from embedding_net.evaluation.distances import paired_distances


def verification_metrics(distances, same):
    """ROC AUC, equal error rate and best-threshold accuracy of pair distances.

    Args:
        distances: float [P]; smaller means more likely the same class.
        same: bool [P]; True for a pair of one class. Both kinds must occur.

    Returns:
        A dict with `roc_auc` (scikit-learn `roc_auc_score` on -distance), `eer` (the rate at
        which false accepts equal false rejects, linearly interpolated between the two points of
        `roc_curve` where their difference changes sign), `threshold` (predict "same" when
        distance <= threshold; the midpoint between the consecutive sorted distances that
        maximises the accuracy, the smallest such on a tie; the largest distance when calling
        every pair "same" is best, just below the smallest when calling none is) and `accuracy`
        at that threshold.
    """
    from sklearn import metrics as sk_metrics  # imported here: scikit-learn takes a second to load

    distances = np.asarray(distances, np.float64)
    same = np.asarray(same)
    if distances.ndim != 1 or same.shape != distances.shape or same.dtype != bool:
        raise ValueError(f"`distances` must be 1-D and `same` bool of the same shape. Received: "
                         f"{distances.dtype} {distances.shape} and {same.dtype} {same.shape}")
    positives = int(same.sum())
    if positives in (0, len(same)):
        raise ValueError(f"`same` must hold both same-class and different-class pairs. "
                         f"Received: {positives} of {len(same)} same-class")
    roc_auc = sk_metrics.roc_auc_score(same, -distances)
    false_accept, true_accept, _ = sk_metrics.roc_curve(same, -distances, drop_intermediate=False)
    # fpr - fnr rises from -1 at the first point (accept nothing) to 1 at the last.
    gap = false_accept - (1.0 - true_accept)
    i = int(np.argmax(gap >= 0))
    t = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = false_accept[i - 1] + t * (false_accept[i] - false_accept[i - 1])

    order = np.argsort(distances, kind="stable")
    sorted_distances, sorted_same = distances[order], same[order]
    # Calling the m nearest pairs "same" (m = 0..P) gets right the positives among them and
    # the negatives after them; a cut is only possible between two different distances.
    accepted_positives = np.concatenate([[0], np.cumsum(sorted_same)])
    accepted_negatives = np.arange(len(same) + 1) - accepted_positives
    correct = accepted_positives + (len(same) - positives) - accepted_negatives
    possible = np.ones(len(same) + 1, bool)
    possible[1:-1] = sorted_distances[:-1] < sorted_distances[1:]
    m = int(np.argmax(np.where(possible, correct, -1)))
    if m == 0:
        threshold = np.nextafter(sorted_distances[0], -np.inf)
    elif m == len(same):
        threshold = sorted_distances[-1]
    else:
        threshold = (sorted_distances[m - 1] + sorted_distances[m]) / 2
    return {"roc_auc": float(roc_auc), "eer": float(eer), "threshold": float(threshold),
            "accuracy": float(correct[m] / len(same))}


def sample_pairs(labels, max_pairs=100000, seed=0):
    """A balanced random set of distinct index pairs, half same-class and half not.

    Each half is drawn uniformly without replacement (`numpy.random.default_rng(seed)`) from
    all the same-class, resp. different-class, pairs, which are numbered implicitly so that
    memory stays O(N + max_pairs).

    Args:
        labels: integer [N].
        max_pairs: at most this many pairs; fewer when there are fewer than max_pairs // 2
            same-class (or different-class) pairs, so that the halves stay equal.
        seed: seed of the draw.

    Returns:
        int64 [2n, 2] pairs (i, j) with i < j: the first n same-class, the last n not.

    Raises:
        ValueError: `max_pairs` < 2, or no same-class or no different-class pair exists.
    """
    check_positive("max_pairs", max_pairs)
    if max_pairs < 2:
        raise ValueError(f"`max_pairs` must be >= 2. Received: {max_pairs}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be 1-D integers. Received: {labels.dtype} {labels.shape}")
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    # Sorted by class, position p pairs with the later positions of its class (same-class)
    # and with every position after its class's end (different-class): each pair once.
    ends = np.repeat(starts + counts, counts)
    position = np.arange(len(labels))
    per_position = {True: ends - position - 1, False: len(labels) - ends}
    totals = {kind: int(n.sum()) for kind, n in per_position.items()}
    n = min(max_pairs // 2, totals[True], totals[False])
    if n == 0:
        raise ValueError(f"`labels` must allow both same-class and different-class pairs. "
                         f"Received: {totals[True]} and {totals[False]} of them")
    rng = np.random.default_rng(seed)
    halves = []
    for kind, first_partner in ((True, position + 1), (False, ends)):
        numbers = rng.choice(totals[kind], n, replace=False)
        cumulative = np.cumsum(per_position[kind])
        p = np.searchsorted(cumulative, numbers, side="right")
        q = first_partner[p] + numbers - (cumulative[p] - per_position[kind][p])
        i, j = order[p], order[q]
        halves.append(np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1))
    return np.concatenate(halves).astype(np.int64)


def pair_distances(embeddings, pairs, distance="euclidean", chunk_size=65536):
    """float32 [P] distances between `embeddings[pairs[:, 0]]` and `embeddings[pairs[:, 1]]`.

    Args:
        embeddings: [N, D].
        pairs: integer [P, 2] indices into `embeddings`.
        distance: `euclidean`, `squared_euclidean` or `cosine`, as `distance_matrix` defines.
        chunk_size: pairs gathered at a time (two [chunk_size, D] copies in memory).
    """
    check_positive("chunk_size", chunk_size)
    embeddings = check_embeddings(embeddings)
    pairs = np.asarray(pairs)
    if (pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer)
            or (pairs.size and (pairs.min() < 0 or pairs.max() >= len(embeddings)))):
        raise ValueError(f"`pairs` must be integers [P, 2] in [0, {len(embeddings)}). Received: "
                         f"{pairs.dtype} {pairs.shape}")
    result = np.empty(len(pairs), np.float32)
    for begin in range(0, len(pairs), chunk_size):
        chunk = pairs[begin : begin + chunk_size]
        result[begin : begin + len(chunk)] = paired_distances(
            embeddings[chunk[:, 0]], embeddings[chunk[:, 1]], distance)
    return result
