"""Brute-force NumPy references of the pair-based losses: loops over anchors and pairs in
float64, written from the papers and pytorch-metric-learning's definitions, sharing no code
with the package; and central finite differences for their gradients."""

import numpy as np


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_matrix(embeddings, references=None):
    return _unit(embeddings) @ _unit(embeddings if references is None else references).T


def with_memory(labels, embeddings, memory):
    """References: the batch followed by a cross-batch memory `(labels, embeddings)` or None."""
    if memory is None:
        return np.asarray(labels), np.asarray(embeddings)
    return np.concatenate([labels, memory[0]]), np.concatenate([embeddings, memory[1]])


def _log1p_sum_exp(values):
    return float(np.log1p(np.sum(np.exp(values)))) if len(values) else 0.0


def _logsumexp(values):
    values = np.asarray(values, float)
    peak = values.max()
    return float(peak + np.log(np.sum(np.exp(values - peak))))


def pairs_of(labels, a):
    """Anchor a's positives and negatives among `labels` (the batch first, then any memory)."""
    positives = [j for j in range(len(labels)) if j != a and labels[j] == labels[a]]
    negatives = [j for j in range(len(labels)) if labels[j] != labels[a]]
    return positives, negatives


def multi_similarity(labels, embeddings, alpha=2.0, beta=50.0, base=0.5, mining_epsilon=None, memory=None):
    reference_labels, references = with_memory(labels, embeddings, memory)
    s = cosine_matrix(embeddings, references)
    total = 0.0
    for a in range(len(labels)):
        positives, negatives = pairs_of(reference_labels, a)
        if mining_epsilon is not None:
            if not positives or not negatives:
                positives, negatives = [], []
            else:
                kept_p = [p for p in positives if s[a, p] - mining_epsilon < max(s[a, n] for n in negatives)]
                kept_n = [n for n in negatives if s[a, n] + mining_epsilon > min(s[a, p] for p in positives)]
                positives, negatives = kept_p, kept_n
        total += _log1p_sum_exp([-alpha * (s[a, p] - base) for p in positives]) / alpha
        total += _log1p_sum_exp([beta * (s[a, n] - base) for n in negatives]) / beta
    return total / len(labels)


def _mean_of_positive(values):
    values = [v for v in values if v > 0]
    return sum(values) / len(values) if values else 0.0


def supcon(labels, embeddings, temperature=0.1, memory=None):
    reference_labels, references = with_memory(labels, embeddings, memory)
    s = cosine_matrix(embeddings, references) / temperature
    if not any(pairs_of(reference_labels, a)[0] for a in range(len(labels))) or len(set(reference_labels)) < 2:
        return 0.0
    losses = []
    for a in range(len(labels)):
        positives, negatives = pairs_of(reference_labels, a)
        if not positives:
            continue
        denominator = _logsumexp([s[a, j] for j in positives + negatives])
        losses.append(-np.mean([s[a, p] - denominator for p in positives]))
    return _mean_of_positive(losses)


def circle(labels, embeddings, margin=0.4, gamma=80.0, memory=None):
    """The value; the gradient's weights alpha_p, alpha_n are constants (see `circle_weights`)."""
    references = with_memory(labels, embeddings, memory)[1]
    return circle_with_weights(labels, embeddings, cosine_matrix(embeddings, references), margin, gamma, memory)


def circle_with_weights(labels, embeddings, weights_from, margin=0.4, gamma=80.0, memory=None):
    """Circle loss with the pair weights computed from the similarity matrix `weights_from`
    (held fixed when differentiating, as the paper's stop-gradient)."""
    reference_labels, references = with_memory(labels, embeddings, memory)
    s = cosine_matrix(embeddings, references)
    losses = []
    for a in range(len(labels)):
        positives, negatives = pairs_of(reference_labels, a)
        if not positives or not negatives:
            continue
        positive = [-gamma * max(1 + margin - weights_from[a, p], 0) * (s[a, p] - (1 - margin)) for p in positives]
        negative = [gamma * max(weights_from[a, n] + margin, 0) * (s[a, n] - margin) for n in negatives]
        x = _logsumexp(positive) + _logsumexp(negative)
        losses.append(float(np.logaddexp(0.0, x)))
    return _mean_of_positive(losses)


def numerical_gradient(function, embeddings, step=1e-6):
    """Central differences of the scalar `function(embeddings)`, in float64."""
    embeddings = np.asarray(embeddings, np.float64)
    gradient = np.zeros_like(embeddings)
    for index in np.ndindex(embeddings.shape):
        up, down = embeddings.copy(), embeddings.copy()
        up[index] += step
        down[index] -= step
        gradient[index] = (function(up) - function(down)) / (2 * step)
    return gradient


def proxy_anchor(labels, embeddings, proxies, margin=0.1, alpha=32.0):
    """Proxy Anchor with one proxy per row of `proxies` [C, D], as a loop over proxies."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    centres = proxies / np.linalg.norm(proxies, axis=1, keepdims=True)
    cos = unit @ centres.T
    present = [c for c in range(len(proxies)) if np.any(labels == c)]
    positive = sum(_log1p_sum_exp([-alpha * (cos[i, c] - margin) for i in range(len(labels)) if labels[i] == c])
                   for c in present)
    negative = sum(_log1p_sum_exp([alpha * (cos[i, c] + margin) for i in range(len(labels)) if labels[i] != c])
                   for c in range(len(proxies)))
    return (positive / len(present) if present else 0.0) + negative / len(proxies)


def cosface(labels, embeddings, centres, scale=64.0, margin=0.35, sub_centers=1):
    """Mean cross-entropy of CosFace logits; `centres` [D, C * sub_centers], class c owning
    columns c * sub_centers ... (c + 1) * sub_centers - 1."""
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    columns = centres / np.linalg.norm(centres, axis=0, keepdims=True)
    cos = unit @ columns
    classes = cos.shape[1] // sub_centers
    cos = cos.reshape(len(labels), classes, sub_centers).max(axis=2)
    total = 0.0
    for i, label in enumerate(labels):
        logits = scale * cos[i].copy()
        logits[label] = scale * (cos[i, label] - margin)
        total += _logsumexp(logits) - logits[label]
    return total / len(labels)


def _euclidean(x, y):
    return float(np.sqrt(np.sum((np.asarray(x, float) - np.asarray(y, float)) ** 2)))


def triplet_all(labels, embeddings, margin=0.2, memory=None):
    """Batch-all triplets over the batch's anchors: the sum of the positive hinges divided by
    their number (0 if none)."""
    reference_labels, references = with_memory(labels, embeddings, memory)
    values = []
    for a in range(len(labels)):
        positives, negatives = pairs_of(reference_labels, a)
        values += [_euclidean(embeddings[a], references[p]) - _euclidean(embeddings[a], references[n]) + margin
                   for p in positives for n in negatives]
    return _mean_of_positive(values)


def batch_contrastive(labels, embeddings, positive_margin=0.0, negative_margin=1.0, memory=None):
    """The mean of the non-zero positive terms plus that of the non-zero negative terms."""
    reference_labels, references = with_memory(labels, embeddings, memory)
    positive, negative = [], []
    for a in range(len(labels)):
        positives, negatives = pairs_of(reference_labels, a)
        positive += [max(_euclidean(embeddings[a], references[p]) - positive_margin, 0.0) for p in positives]
        negative += [max(negative_margin - _euclidean(embeddings[a], references[n]), 0.0) for n in negatives]
    return _mean_of_positive(positive) + _mean_of_positive(negative)
