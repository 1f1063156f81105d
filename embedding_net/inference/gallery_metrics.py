"""Metrics of a labelled folder against a gallery index: `test.py --data DIR --encodings X.enidx`.

An `.npz` gallery keeps `prediction.evaluate_folder` (every metric of `score_split`, from
[queries x gallery] blocks). An index gallery may hold a million images, so its numbers come
through the index, from neighbours only: top-1 / top-5 accuracy from `nearest_classes`, and
precision@1, R-precision, MAP@R and the k-NN vote from `query_metrics_via_index`. Centroid
accuracy and verification are left out (an index keeps no centroids; pairs need no gallery).

With an approximate backend the numbers show what the approximation costs; `recall_at_1` and
`recall_at_10` say how much: a seeded sample of `recall_queries` queries is searched in the index
and in an exact copy of it (`exact_copy`), and the true neighbours found are counted.
"""

import numpy as np

from embedding_net.data.folders import scan_image_folder
from embedding_net.errors import DatasetError
from embedding_net.index import alive_ids, exact_copy, query_metrics_via_index, recall_at
from embedding_net.inference.streaming import embed_listing


def evaluate_folder_via_index(model, gallery, folder, knn_k=5, batch_size=256, recall_queries=1000,
                              seed=0):
    """Metrics of `folder/<class>/<image>` against `gallery` (a `Gallery` over an index).

    Returns:
        A flat dict: `protocol`, `queries`, `top1_accuracy`, `top5_accuracy`, `precision_at_1`,
        `r_precision`, `map_at_r`, `knn{k}_accuracy`, `images_of_unknown_classes`, `backend`,
        `gallery_images`, and for an approximate backend `recall_at_1`, `recall_at_10`,
        `recall_queries`.

    Raises:
        DatasetError: the folder is unusable, or none of its classes is in the gallery.
    """
    listing = scan_image_folder(folder, min_images_per_class=1)
    embeddings, keep = embed_listing(model, listing, batch_size)
    index = gallery.index
    ids = {name: i for i, name in enumerate(index.class_names)}
    mapped = np.array([ids.get(listing.class_names[label], -1) for label in listing.labels[keep]], np.int64)
    known = mapped >= 0
    if not known.any():
        raise DatasetError(f"none of the classes of {folder} is in the gallery {gallery.path}")
    queries, labels = embeddings[known], mapped[known]
    names = [index.class_names[label] for label in labels]
    nearest = gallery.nearest_classes(queries, top_k=5)
    metrics = {"protocol": "query_vs_reference", "queries": int(len(labels)),
               "top1_accuracy": float(np.mean([row[0][0] == name for row, name in zip(nearest, names)])),
               "top5_accuracy": float(np.mean([name in {c for c, _ in row} for row, name in zip(nearest, names)]))}
    retrieval = query_metrics_via_index(index, queries, labels, knn_k)
    metrics.update({key: retrieval[key] for key in ("precision_at_1", "r_precision", "map_at_r")})
    metrics[f"knn{knn_k}_accuracy"] = retrieval["knn_accuracy"]
    metrics.update({"images_of_unknown_classes": int(np.sum(~known)), "backend": index.backend,
                    "gallery_images": int(index.count)})
    if index.approximate:
        metrics.update(recall_of(index, queries, recall_queries, seed))
    return metrics


def recall_of(index, queries, count=1000, seed=0, ks=(1, 10)):
    """Recall@k of an approximate `index` against an exact copy, on `count` queries drawn
    (seeded) from `queries`."""
    rng = np.random.default_rng(seed)
    sample = queries[np.sort(rng.choice(len(queries), min(count, len(queries)), replace=False))]
    k = min(max(ks), index.count)
    alive = alive_ids(index)
    exact_ids = exact_copy(index).search(sample, k)[1]
    exact_ids = np.where(exact_ids >= 0, alive[np.maximum(exact_ids, 0)], -1)
    result = recall_at(index.search(sample, k)[1], exact_ids, [min(x, k) for x in ks])
    result = {f"recall_at_{x}": result[f"recall_at_{min(x, k)}"] for x in ks}
    result["recall_queries"] = int(len(sample))
    return result
