"""What many test files share: the brute-force references the vectorised code is checked
against (written out term by term, in float64), and the overrides of a tiny training run.
Fixtures live in conftest.py; plain functions here, imported as `from helpers import ...`."""

import math

import numpy as np


def reference_distance(u, v, distance):
    """One distance between two float64 vectors, written out term by term."""
    u = [float(t) for t in u]
    v = [float(t) for t in v]
    if distance == "squared_euclidean":
        return sum((a - b) ** 2 for a, b in zip(u, v))
    if distance == "euclidean":
        return math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))
    if distance == "cosine":
        norm_u = math.sqrt(sum(a * a for a in u))
        norm_v = math.sqrt(sum(b * b for b in v))
        if norm_u == 0.0 or norm_v == 0.0:  # documented: zero vectors count as orthogonal
            return 1.0
        return 1.0 - sum(a * b for a, b in zip(u, v)) / (norm_u * norm_v)
    raise AssertionError(distance)


def reference_matrix(embeddings, distance):
    rows = np.asarray(embeddings, dtype=np.float64)
    size = len(rows)
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            if i != j:
                out[i, j] = reference_distance(rows[i], rows[j], distance)
    return out


def reference_class_distances(queries, references, labels, num_classes, distance, query_indices=None):
    """[Q, C]: the distance from each query to its nearest reference of each class (+inf: none),
    skipping reference `query_indices[q]` for query q (leave-one-out)."""
    result = np.full((len(queries), num_classes), np.inf)
    for q, query in enumerate(queries):
        for r, (reference, label) in enumerate(zip(references, labels)):
            if query_indices is not None and query_indices[q] == r:
                continue
            result[q, label] = min(result[q, label], reference_distance(query, reference, distance))
    return result


def tiny_overrides(root, work_dir, name="tiny", plots=False, export_litert=False, export_serving=False):
    """`--set` overrides for a run of a few seconds on the subset (without the LiteRT and
    serving copies, a few seconds more each, unless `export_litert` / `export_serving`)."""
    return [
        f"data.root={root}", "data.dataset=omniglot", "data.classes_per_batch=8",
        "data.images_per_class=2", "train.epochs=2", "train.steps_per_epoch=3",
        "train.validation_steps=2", "train.verbose=0", "model.embedding_size=16",
        f"output.work_dir={work_dir}", f"output.name={name}", "evaluation.episodes=100",
        f"evaluation.plots={'true' if plots else 'false'}", "evaluation.tsne_max_points=200",
        f"train.export_litert={'true' if export_litert else 'false'}",
        f"train.export_serving={'true' if export_serving else 'false'}",
    ]


def saved_conv4_with_litert(folder, name="model.keras"):
    """An untrained conv4 (28 x 28 x 1 images -> 16 dimensions, seed 0) saved as `folder/name`
    with its LiteRT copy, as train.py leaves it; returns the model and the model file's path."""
    import keras

    from embedding_net.models import build_embedding_model
    from embedding_net.training.export import export_litert

    keras.utils.set_random_seed(0)
    model = build_embedding_model("conv4", (28, 28, 1), 16)
    path = str(folder / name)
    model.save(path)
    export_litert(model, path)
    return model, path
