"""N-way k-shot few-shot episodes drawn from a labelled set, and their accuracy, in NumPy.

An episode draws `n_way` classes, then `k_shot` support and `queries_per_class` query images of
each; a query is assigned the class of the nearest prototype (mean support embedding, so the
nearest support image when k_shot = 1). The draws depend only on the labels and the seed, never
on the embeddings, so two models evaluated with one seed see exactly the same episodes.
(The official Omniglot one-shot runs are `embedding_net.evaluation.nearest.oneshot_accuracy`.)
"""

import numpy as np

from embedding_net.evaluation.distances import distance_matrix
from embedding_net.evaluation.neighbours import check_embeddings, check_positive


def sample_episodes(labels, n_way=20, k_shot=1, episodes=1000, queries_per_class=1, seed=0):
    """The image indices of each episode, drawn with `numpy.random.default_rng(seed)`.

    Per episode: classes = rng.choice(the classes with at least k_shot + queries_per_class
    images, in increasing label order, n_way, replace=False); then for each drawn class in
    turn, rng.choice(its image indices in increasing order, k_shot + queries_per_class,
    replace=False), the first k_shot being the support and the rest the queries.

    Args:
        labels: integer [N].
        n_way: classes per episode.
        k_shot: support images per class.
        episodes: how many episodes.
        queries_per_class: query images per class.
        seed: seed of the generator.

    Returns:
        An iterator of `(support, queries)`, int64 index arrays [n_way, k_shot] and
        [n_way, queries_per_class]; row i is the i-th drawn class. Checks run at the call.

    Raises:
        ValueError: a count below 1, or `n_way` above the number of classes with enough images.
    """
    for name, value in (("n_way", n_way), ("k_shot", k_shot), ("episodes", episodes),
                        ("queries_per_class", queries_per_class)):
        check_positive(name, value)
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be 1-D integers. Received: {labels.dtype} {labels.shape}")
    per_class = k_shot + queries_per_class
    order = np.argsort(labels, kind="stable")  # indices of each class in increasing order
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    eligible = np.nonzero(counts >= per_class)[0]
    if n_way > len(eligible):
        raise ValueError(
            f"`n_way` must be <= the {len(eligible)} classes with at least k_shot + "
            f"queries_per_class = {per_class} images. Received: n_way={n_way}, k_shot={k_shot}, "
            f"queries_per_class={queries_per_class}"
        )
    members = np.split(order, starts[1:])
    return _draw(members, eligible, n_way, k_shot, per_class, episodes, seed)


def _draw(members, eligible, n_way, k_shot, per_class, episodes, seed):
    """The generator behind `sample_episodes`, so that its checks run at the call."""
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        drawn = rng.choice(eligible, n_way, replace=False)
        picks = np.stack([rng.choice(members[c], per_class, replace=False) for c in drawn])
        yield picks[:, :k_shot], picks[:, k_shot:]


def episode_accuracy(embeddings, labels, n_way=20, k_shot=1, episodes=1000, queries_per_class=1,
                     seed=0, distance="euclidean"):
    """Mean accuracy of nearest-prototype classification over seeded few-shot episodes.

    Episodes are drawn by `sample_episodes`. A query is assigned the drawn class whose
    prototype (mean of its support embeddings) is nearest by `distance`; a tie goes to the
    class drawn first.

    Args:
        embeddings: [N, D].
        labels: integer [N].
        n_way: classes per episode.
        k_shot: support images per class.
        episodes: how many episodes.
        queries_per_class: query images per class.
        seed: seed of the episode draws.
        distance: `euclidean`, `squared_euclidean` or `cosine`.

    Returns:
        A dict with `mean` (the mean of the per-episode accuracies), `ci95` (the half-width
        1.96 * std / sqrt(episodes), with the population std, ddof=0), `episodes`, `n_way`,
        `k_shot` and `queries_per_class`.
    """
    embeddings, labels = check_embeddings(embeddings, labels)
    draws = sample_episodes(labels, n_way, k_shot, episodes, queries_per_class, seed)
    truth = np.repeat(np.arange(n_way), queries_per_class)  # queries are class-major
    accuracies = np.empty(episodes)
    for e, (support, queries) in enumerate(draws):
        prototypes = embeddings[support].mean(axis=1)  # [n_way, D]
        block = distance_matrix(embeddings[queries.ravel()], prototypes, distance)
        accuracies[e] = np.mean(np.argmin(block, axis=1) == truth)
    return {"mean": float(accuracies.mean()),
            "ci95": float(1.96 * accuracies.std() / np.sqrt(episodes)),
            "episodes": int(episodes), "n_way": int(n_way), "k_shot": int(k_shot),
            "queries_per_class": int(queries_per_class)}
