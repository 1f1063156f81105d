"""Class answers through the approximate index backends against exact search, on real
embeddings (an encodings file written by train.py, e.g. the default Omniglot job's).

    python bench/search_classes.py --encodings work_dirs/omniglot/encodings.npz

A seeded set of reference images is held out as queries; the rest is the gallery. For every
backend, the share of queries whose predicted class (nearest class by its nearest image), top-5
class list and 5-NN vote equal exact search's. Writes bench/results/search_classes.json.
"""

import argparse
import os
import sys
import time

import numpy as np

import lib


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encodings", required=True, help="an encodings .npz written by train.py")
    ap.add_argument("--queries", type=int, default=2000, help="held-out queries (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=lib.default_output("search_classes"))
    args = ap.parse_args(argv)
    from embedding_net.index import EmbeddingIndex, list_backends
    from embedding_net.inference import load_encodings

    encodings = load_encodings(args.encodings)
    distance = encodings.metadata.get("distance", "euclidean")
    rng = np.random.default_rng(args.seed)
    held_out = rng.choice(len(encodings.labels), min(args.queries, len(encodings.labels) // 2), replace=False)
    keep = np.setdiff1d(np.arange(len(encodings.labels)), held_out)
    gallery, labels = encodings.embeddings[keep], encodings.labels[keep]
    queries = encodings.embeddings[held_out]
    paths = [encodings.paths[i] for i in keep]

    def answers(backend):
        started = time.perf_counter()
        index = EmbeddingIndex.build(gallery, labels, encodings.class_names, paths, distance=distance, backend=backend)
        built = time.perf_counter() - started
        classified = index.classify(queries, top_k=5)
        votes = index.knn_vote(queries, k=5)
        return built, [row["prediction"] for row in classified], [[n for n, _ in row["nearest"]] for row in classified], votes

    _, exact_prediction, exact_top5, exact_votes = answers("exact")
    results = []
    for backend in list_backends():
        built, prediction, top5, votes = answers(backend)
        results.append({"backend": backend, "build_s": round(built, 3), "queries": len(queries),
                        "prediction_agreement": float(np.mean([a == b for a, b in zip(prediction, exact_prediction)])),
                        "top5_agreement": float(np.mean([a == b for a, b in zip(top5, exact_top5)])),
                        "knn5_vote_agreement": float(np.mean(np.asarray(votes) == np.asarray(exact_votes)))})
    payload = {"name": "search_classes", "command": "python " + " ".join([os.path.relpath(sys.argv[0], lib.REPO),
                                                                            *sys.argv[1:]]),
               "machine": lib.host_info(), "encodings": os.path.abspath(args.encodings), "gallery": int(len(keep)),
               "classes": len(encodings.class_names), "distance": distance, "results": results}
    lib.atomic_write_json(args.json_out, payload)
    lib.print_table("class answers against exact search", ["backend", "build s", "prediction", "top-5 list", "5-NN vote"],
                    [[r["backend"], lib.fmt(r["build_s"], 2), lib.fmt(r["prediction_agreement"], 4),
                      lib.fmt(r["top5_agreement"], 4), lib.fmt(r["knn5_vote_agreement"], 4)] for r in results])
    return 0


if __name__ == "__main__":
    sys.exit(main())
