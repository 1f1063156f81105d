"""Inference: embedding throughput, test.py from a cold start, and nearest-neighbour search.

  * embedding throughput: `embedding_net.inference.encodings.embed_images` (model.predict, batch
    --batch 256) of random uint8 28 x 28 images through conv4 (embedding --embedding, 128 as
    configs/omniglot.yml), images/s, median of --repeats after one warm-up call;
  * test.py cold start: `python test.py --weights model.keras --encodings encodings.npz
    --image one.png` in a new process, wall time, median of --cold-runs (the files are in the
    OS cache after the first run; the first run is reported separately); once as users run it
    (train.py's LiteRT copy, model.tflite, is there and fresh, so TensorFlow is not imported)
    and once with `--keras` (model.keras through TensorFlow). The model is the untrained conv4
    saved and exported as train.py does; the encodings are random unit vectors for
    32,460 images of 1,623 classes, the size of the default run's train + val encodings. For
    scale, the same measurement of `python -c "import tensorflow"` is given;
  * nearest-neighbour search: `embedding_net.inference.encodings.classify` (what test.py calls, through
    embedding_net.inference.prediction.predict_paths) of one query at a time (latency per query, median
    over --queries) and of 1,000 queries at once (time per query), against --stored encodings of
    random unit vectors (D = --dim 128, 20 per class).
"""

import argparse
import os
import statistics
import sys
import time

import lib

NAME = "inference"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--embedding", type=int, default=128)
    ap.add_argument("--embed-images", type=int, default=8192, help="images per embedding-throughput call")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--stored", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=200, help="single-query searches timed per size")
    ap.add_argument("--batched-queries", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--omniglot", default=lib.DEFAULT_OMNIGLOT, help="source of the query image")
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a.quick:
        a.embed_images, a.repeats, a.cold_runs, a.queries, a.batched_queries = 512, 2, 1, 10, 100
        if a.stored == [10000, 100000]:
            a.stored = [10000]
    return a


ART = os.path.join(lib.CACHE, "inference")


def random_unit(rng, n, d):
    import numpy as np

    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def worker(a):
    import embedding_net  # noqa: F401  (before TensorFlow)
    import cv2
    import numpy as np
    import tensorflow as tf

    from embedding_net.training.callbacks import save_model_atomically
    from embedding_net.inference.encodings import classify, embed_images, make_encodings, save_encodings
    from embedding_net.training.export import export_litert
    from embedding_net.models.builders import build_embedding_model

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    out = {}
    # Artifacts for test.py: what train.py writes (model.keras, encodings.npz) and one image.
    os.makedirs(ART, exist_ok=True)
    model = build_embedding_model("conv4", (28, 28, 1), a.embedding)
    save_model_atomically(model, os.path.join(ART, "model.keras"))
    export_litert(model, os.path.join(ART, "model.keras"))
    n_ref, n_cls = 32460, 1623
    enc = make_encodings(random_unit(rng, n_ref, a.embedding), np.arange(n_ref) // 20,
                         [f"class{c:04d}" for c in range(n_cls)], [f"ref/{i}.png" for i in range(n_ref)],
                         {"distance": "euclidean", "input_shape": [28, 28, 1], "backbone": "conv4"})
    save_encodings(os.path.join(ART, "encodings.npz"), enc)
    with np.load(os.path.join(a.omniglot, "images_evaluation.npz"), allow_pickle=False) as z:
        pixels = z["images"][0, 0].astype(np.uint8) * 255  # as materialize_omniglot writes it
    cv2.imwrite(os.path.join(ART, "query.png"), pixels)

    # Embedding throughput.
    images = rng.integers(0, 256, (a.embed_images, 28, 28, 1), dtype=np.uint8)
    embed_images(model, images[: a.batch * 2], a.batch)  # warm-up: traces predict
    meter = lib.NoiseMeter().start()
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        embed_images(model, images, a.batch)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out["embed"] = {"images": a.embed_images, "batch": a.batch, "embedding": a.embedding,
                    "seconds_median": round(med, 4), "images_per_sec": round(a.embed_images / med, 1),
                    "other_procs_cpu_cores": meter.stop()}
    print(f"[inference] embed: {out['embed']['images_per_sec']:,.0f} images/s", flush=True)

    # Nearest-neighbour search with classify.
    out["search"] = []
    for n in a.stored:
        enc = make_encodings(random_unit(rng, n, a.dim), np.arange(n) // 20, [f"c{c}" for c in range((n + 19) // 20)],
                             [""] * n, {"distance": "euclidean"})
        queries = random_unit(rng, max(a.queries, a.batched_queries), a.dim)
        classify(queries[:1], enc, 5)  # warm-up
        meter = lib.NoiseMeter().start()
        single = []
        for i in range(a.queries):
            t0 = time.perf_counter()
            classify(queries[i : i + 1], enc, 5)
            single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        classify(queries[: a.batched_queries], enc, 5)
        batched = (time.perf_counter() - t0) / a.batched_queries
        row = {"stored": n, "dim": a.dim, "classes": (n + 19) // 20, "queries": a.queries,
               "single_query_ms_median": round(1000 * statistics.median(single), 4),
               "single_query_ms_p90": round(1000 * sorted(single)[int(0.9 * (len(single) - 1))], 4),
               "batched_queries": a.batched_queries, "batched_ms_per_query": round(1000 * batched, 4),
               "other_procs_cpu_cores": meter.stop()}
        out["search"].append(row)
        print(f"[inference] search {n:,}: {row['single_query_ms_median']} ms/query alone, "
              f"{row['batched_ms_per_query']} ms/query batched", flush=True)
    out["versions"] = lib.ml_versions()
    lib.worker_reply(out)


def main(argv=None):
    a = parse_args(argv)
    if a._worker:
        return worker(a)
    started = time.perf_counter()
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "1", "--batch", str(a.batch),
           "--embedding", str(a.embedding), "--embed-images", str(a.embed_images), "--repeats", str(a.repeats),
           "--stored", *map(str, a.stored), "--dim", str(a.dim), "--queries", str(a.queries),
           "--batched-queries", str(a.batched_queries), "--seed", str(a.seed), "--omniglot", a.omniglot]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    rc, out, err, wall, _, js = lib.run_subprocess(cmd, timeout=a.timeout,
                                                      log_path=os.path.join(lib.CACHE, "logs", NAME, "worker.log"))
    if rc != 0 or js is None:
        raise SystemExit(f"inference worker failed (rc {rc}):\n{err}")

    def cold(label, command):
        # One run of test.py lasts a fraction of a second, in which a few 1/100 s clock ticks of
        # other processes already exceed the threshold: validity is judged over the series.
        series = lib.NoiseMeter().start()
        runs = []
        for i in range(a.cold_runs):
            rc, out, err, wall, other, _ = lib.run_subprocess(
                command, timeout=600, log_path=os.path.join(lib.CACHE, "logs", NAME, f"{label}_{i}.log"))
            runs.append({"rc": rc, "wall_s": wall, "other_procs_cpu_cores": other,
                         "stdout_first_line": (out.strip().splitlines() or [""])[0][:200],
                         "error": None if rc == 0 else (err.strip().splitlines() or [""])[-1][:300]})
        walls = [r["wall_s"] for r in runs if r["rc"] == 0]
        return {"command": " ".join(os.path.relpath(c, lib.REPO) if os.path.isabs(c) and c.startswith(lib.REPO)
                                    else c for c in command),
                "runs": runs, "first_s": runs[0]["wall_s"] if runs else None,
                "median_s": round(statistics.median(walls), 3) if walls else None,
                "min_s": min(walls) if walls else None,
                "other_procs_cpu_cores_max": max((r["other_procs_cpu_cores"] or 0) for r in runs) if runs else None,
                "other_procs_cpu_cores_series": series.stop()}

    test_command = [sys.executable, os.path.join(lib.REPO, "test.py"), "--weights", os.path.join(ART, "model.keras"),
                    "--encodings", os.path.join(ART, "encodings.npz"), "--image", os.path.join(ART, "query.png")]
    test_py = cold("test_py", test_command)
    test_py_keras = cold("test_py_keras", test_command + ["--keras"])
    for label, r in (("", test_py), (" --keras", test_py_keras)):
        print(f"[inference] test.py{label} cold start: median {r['median_s']} s "
              f"({r['runs'][0].get('error') or r['runs'][0]['stdout_first_line']})", flush=True)
    import_tf = cold("import_tensorflow", [sys.executable, "-c", "import tensorflow"])

    def ok(v):
        return v is not None and v <= a.noise_threshold

    e = js["embed"]
    print(f"\n(other-process CPU above {a.noise_threshold} cores marks a row invalid)")
    lib.print_table("embedding throughput", ["model", "batch", "images/s", "other procs (cores)", "valid"],
                       [[f"conv4 28px, embedding {e['embedding']}", e["batch"], lib.fmt(e["images_per_sec"], 0),
                         lib.fmt(e["other_procs_cpu_cores"], 3), "yes" if ok(e["other_procs_cpu_cores"]) else "NO"]])
    lib.print_table("cold start (new process, wall time)", ["command", "first (s)", "median (s)", "runs",
                                                              "other procs (cores, over the runs)", "valid"],
                       [[label, lib.fmt(r["first_s"], 2),
                         lib.fmt(r["median_s"], 2), len(r["runs"]), lib.fmt(r["other_procs_cpu_cores_series"], 3),
                         "yes" if ok(r["other_procs_cpu_cores_series"]) else "NO"]
                        for label, r in (("test.py --image one.png", test_py),
                                         ("test.py --image one.png --keras", test_py_keras),
                                         ("python -c 'import tensorflow'", import_tf))])
    lib.print_table("nearest-class search: encodings.classify, top 5",
                       ["stored encodings", "D", "classes", "one query (ms, median)", "one query (ms, p90)",
                        f"batched ({js['search'][0]['batched_queries'] if js['search'] else '-'} queries), ms/query",
                        "other procs (cores)", "valid"],
                       [[lib.fmt(r["stored"]), r["dim"], lib.fmt(r["classes"]), lib.fmt(r["single_query_ms_median"], 3),
                         lib.fmt(r["single_query_ms_p90"], 3), lib.fmt(r["batched_ms_per_query"], 4),
                         lib.fmt(r["other_procs_cpu_cores"], 3), "yes" if ok(r["other_procs_cpu_cores"]) else "NO"]
                        for r in js["search"]])
    config = {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "output"}
    lib.finish(NAME, a, {"kind": NAME, "config": config, "versions": js.get("versions"), "embed": js["embed"],
                            "search": js["search"], "test_py_cold_start": test_py, "test_py_keras_cold_start": test_py_keras,
                            "import_tensorflow": import_tf,
                            "artifacts": os.path.relpath(ART, lib.REPO)}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
