"""Nearest-neighbour search at scale: every `embedding_net.index` backend against bare faiss.

    python bench/search.py --sizes 10000 100000 1000000 --json-out bench/results/search.json

For each size N: N unit vectors of dimension --dim (128) with class structure: N / 20 classes
(50,000 at a million). Like the output of a trained embedding network, whose intrinsic dimension
is tens, not D (Ansuini et al., NeurIPS 2019), the classes live in a random --intrinsic (32)
dimensional subspace: a random unit centre per class plus Gaussian noise of norm about --noise
(0.5) there, mapped into D dimensions by a random orthonormal basis, plus isotropic noise of norm
about --ambient-noise (0.05), normalised. `--intrinsic 128` gives the worst case for every
approximate search, noise in all 128 dimensions, where no graph can navigate (the module
docstring of `embedding_net.index.faiss_hnsw` gives the numbers). Queries are gallery vectors
(never gallery items themselves) plus isotropic noise of norm about 0.1, normalised.
`--encodings FILE.npz` (keys `embeddings`, `labels`, e.g. Omniglot encodings) adds one dataset
of real embeddings; it is skipped with a message when the file does not exist.

Each backend of the registry (`exact`, `hnsw`, `usearch`, ...) and two yardsticks, bare faiss
`IndexFlatIP` (`faiss_flat_ip`) and `IndexHNSWFlat` (`faiss_hnsw_flat`, the `hnsw` backend's
settings), are measured in a process of their own (`bench/search_workers.py`, which defines
`rss_ratio`), with the index's distance --distance (euclidean):

* build_s: streaming the gallery into the index in chunks of --chunk rows;
* p50_ms / p99_ms: one query at a time, --queries (200) queries, k = 10;
* batched_ms_per_query: --batch (256) queries in one call, median of 3, per query;
* recall_at_1 / recall_at_10: against the exact backend's top 10 on the --queries queries;
* other_cores: cores kept busy by other processes during the worker (0 on a quiet machine).

The JSON (machine, settings, results) is written atomically; a markdown table is printed,
then the issue's targets checked at the largest size.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import lib
from embedding_net.index import DEFAULT_APPROXIMATE_BACKEND
from embedding_net.index.registry import list_backends

WORKER = os.path.join(lib.BENCH, "search_workers.py")
YARDSTICKS = ("faiss_flat_ip", "faiss_hnsw_flat")
COLUMNS = ("size", "backend", "yardstick", "build_s", "rss_ratio", "p50_ms", "p99_ms",
           "batched_ms_per_query", "recall_at_1", "recall_at_10", "other_cores")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 1000000])
    ap.add_argument("--json-out", default=lib.default_output("search"))
    ap.add_argument("--encodings", default=None, help=".npz with embeddings and labels")
    ap.add_argument("--backends", nargs="+", default=None, help="default: all, and yardsticks")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--distance", default="euclidean")
    ap.add_argument("--intrinsic", type=int, default=32, help="dimension of the class subspace")
    ap.add_argument("--noise", type=float, default=0.5, help="within-class noise norm")
    ap.add_argument("--ambient-noise", type=float, default=0.05, help="noise norm in all D")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=50000, help="rows per add() while building")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per worker")
    return ap.parse_args(argv)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_dataset(folder, size, args):
    """gallery.npy, labels.npy of `size` clustered unit vectors, written chunk by chunk."""
    rng = np.random.default_rng(args.seed)
    classes, low = max(10, size // 20), min(args.intrinsic, args.dim)
    basis = np.linalg.qr(rng.standard_normal((args.dim, low)))[0].T.astype(np.float32)
    centres = unit(rng.standard_normal((classes, low), dtype=np.float32))
    gallery = np.lib.format.open_memmap(f"{folder}/gallery.npy", "w+", np.float32,
                                        (size, args.dim))
    labels = rng.integers(0, classes, size)
    for begin in range(0, size, args.chunk):
        part = labels[begin : begin + args.chunk]
        inner = rng.standard_normal((len(part), low), dtype=np.float32) * (args.noise /
                                                                            np.sqrt(low))
        outer = rng.standard_normal((len(part), args.dim), dtype=np.float32) * (
            args.ambient_noise / np.sqrt(args.dim))
        gallery[begin : begin + len(part)] = unit((centres[part] + inner) @ basis + outer)
    gallery.flush()
    np.save(f"{folder}/labels.npy", labels)
    return gallery


def write_encodings(folder, path):
    with np.load(path, allow_pickle=False) as data:
        embeddings = np.asarray(data["embeddings"], np.float32)
        np.save(f"{folder}/labels.npy", np.unique(data["labels"], return_inverse=True)[1])
    np.save(f"{folder}/gallery.npy", embeddings)
    return embeddings


def write_queries(folder, gallery, args):
    """queries.npy (recall, single-query latency) and batch.npy: perturbed gallery vectors."""
    rng = np.random.default_rng(args.seed + 1)
    for name, count in (("queries", args.queries), ("batch", args.batch)):
        picked = np.asarray(gallery[np.sort(rng.integers(0, len(gallery), count))])
        noise = rng.standard_normal(picked.shape).astype(np.float32) * (0.1 / np.sqrt(args.dim))
        np.save(f"{folder}/{name}.npy", unit(picked + noise))


def run_dataset(folder, name, backends, args):
    """Measures every backend on the dataset in `folder`; exact first (it writes the truth)."""
    results, truth = [], os.path.join(folder, "truth.npy")
    for backend in backends:
        spec = {"backend": backend, "data": folder, "dataset": name, "distance": args.distance,
                "k": 10, "chunk_rows": args.chunk,
                "truth": truth if backend != "exact" else None,
                "write_truth": truth if backend == "exact" else None}
        print(f"[search] {name}: {backend} ...", flush=True)
        rc, _, err, wall, other, reply = lib.run_subprocess(
            [sys.executable, WORKER, json.dumps(spec)], timeout=args.timeout)
        if rc != 0 or reply is None:
            print(f"[search] {backend} failed (rc {rc}): {err[-1500:]}", flush=True)
            results.append({"dataset": name, "backend": backend, "error": err[-1500:]})
            continue
        reply.update(other_cores=other, worker_wall_s=wall)
        print("[search]   " + ", ".join(f"{key} {reply.get(key)}" for key in COLUMNS[3:]),
              flush=True)
        results.append(reply)
    return results


def machine():
    import faiss
    import usearch

    info = lib.host_info()
    info.update(numpy=np.__version__, faiss=faiss.__version__, usearch=usearch.__version__,
                faiss_threads=faiss.omp_get_max_threads())
    return info


def table(results):
    rows = [[lib.fmt(r.get(key), 3 if key.startswith("recall") else 2)
             if key not in ("size", "backend", "yardstick") else lib.fmt(r.get(key))
             for key in COLUMNS] for r in results if "error" not in r]
    return lib.markdown_table(list(COLUMNS), rows)


def targets(results):
    """The issue's targets, checked on the largest synthetic size."""
    size = max((r["size"] for r in results if "error" not in r and r["dataset"] != "encodings"),
               default=None)
    at = {r["backend"]: r for r in results if r.get("size") == size and "error" not in r}
    exact, approx, flat = (at.get(n) for n in ("exact", DEFAULT_APPROXIMATE_BACKEND,
                                               "faiss_flat_ip"))
    checks = {}
    if exact and approx:
        checks["approx p50 speed-up over exact (>= 50)"] = exact["p50_ms"] / approx["p50_ms"]
        checks["approx recall@10 (>= 0.95)"] = approx["recall_at_10"]
        checks["approx build s (< 120)"] = approx["build_s"]
    checks.update({f"{n} rss_ratio (<= 1.5)": r["rss_ratio"] for n, r in at.items()
                   if n in list_backends()})
    if exact and flat:
        checks["exact batched / faiss IndexFlatIP batched (<= 1.25)"] = (
            exact["batched_ms_per_query"] / flat["batched_ms_per_query"])
    return {"size": size, "default_backend": DEFAULT_APPROXIMATE_BACKEND,
            "checks": {k: round(v, 3) for k, v in checks.items()}}


def main(argv=None):
    args = parse_args(argv)
    backends = args.backends or [*list_backends(), *YARDSTICKS]
    backends = ["exact", *[b for b in backends if b != "exact"]]
    started, results = time.time(), []
    datasets = [(f"synthetic_{n}", n) for n in args.sizes]
    if args.encodings and not os.path.isfile(args.encodings):
        print(f"[search] --encodings {args.encodings}: no such file, skipped", flush=True)
    elif args.encodings:
        datasets.append(("encodings", None))
    for name, size in datasets:
        folder = tempfile.mkdtemp(prefix="search-", dir=tempfile.gettempdir())
        try:
            gallery = (write_encodings(folder, args.encodings) if size is None
                       else write_dataset(folder, size, args))
            write_queries(folder, gallery, args)
            del gallery
            results += run_dataset(folder, "encodings" if size is None else "synthetic",
                                   backends, args)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    payload = {"name": "search", "command": " ".join(["python", "bench/search.py", *sys.argv[1:]]),
               "machine": machine(), "settings": vars(args), "results": results,
               "targets": targets(results), "wall_s": round(time.time() - started, 1),
               "loadavg_end": [round(v, 2) for v in os.getloadavg()]}
    lib.atomic_write_json(args.json_out, payload)
    print("\n" + table(results) + "\n")
    print(json.dumps(payload["targets"], indent=2))
    print(f"[search] wrote {args.json_out}")


if __name__ == "__main__":
    main()
