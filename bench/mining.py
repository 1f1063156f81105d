"""The share of a training step spent in the loss and its mining, at batch 64, 256 and 1024.

For each batch size B (P = B / 4 classes x K = 4 images) and each mining rule of
embedding_net.losses.pairs.TripletLoss (all / hard / semi_hard), one subprocess trains conv4 (28 px,
embedding 64, Adam 1e-3) with `model.fit` over `pk_dataset` and times alternately:

  * the mined step: `compile(loss=TripletLoss(0.2, mining))`;
  * the null step: the same model and batches with `compile(loss=NullLoss())`, a loss of the
    same output that mines nothing (the mean of the first embedding coordinate: the network,
    the L2 normalisation and their gradients cost the same, the B x B distances and the
    mining are gone).

share = (mined - null) / mined, from the medians. Also timed in isolation: the loss and its
gradient with respect to random unit embeddings [B, 64] (a tf.function), which should be close
to mined - null. No collapse monitors are compiled (they would add their own B x B and, for
ActiveTriplets, a sort of B x B to both steps). Batch-all no longer builds the B x B x B
triplets (embedding_net.mining.batch_all): its memory grows like B^2 plus the activations. As a guard,
from the peak memory of the smaller batches (fitted as a B^2 term), a run whose estimated peak
exceeds 80% of the available memory is skipped, and reported as such; the peak RSS of every run
is in the table.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import lib

NAME = "mining"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--minings", nargs="+", choices=["all", "hard", "semi_hard"], default=["all", "hard", "semi_hard"])
    ap.add_argument("--images-per-class", type=int, default=4)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="steps per timed segment (warm-up included)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--max-seconds", type=float, default=30.0, help="cap on the timed part of one segment")
    ap.add_argument("--rounds", type=int, default=2, help="null/mined segment pairs per subprocess")
    ap.add_argument("--isolated-repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=1800)
    ap.add_argument("--omniglot", default=lib.DEFAULT_OMNIGLOT)
    ap.add_argument("--peer-python", default=lib.DEFAULT_PEER_PYTHON, help="only to prepare the inputs")
    ap.add_argument("--peer-script", default=lib.DEFAULT_PEER_SCRIPT)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a.quick:
        if a.batches == [64, 256, 1024]:
            a.batches = [16, 32]
        a.steps, a.warmup, a.rounds, a.isolated_repeats, a.max_seconds = 5, 2, 1, 5, 5.0
    return a


# --------------------------------------------------------------------------- worker
def worker(a):
    import embedding_net  # noqa: F401  (before TensorFlow)
    import keras
    import numpy as np
    import tensorflow as tf
    from keras import ops

    from embedding_net.losses.triplet import TripletLoss
    from embedding_net.models.builders import build_embedding_model
    from embedding_net.data.sampling import pk_dataset
    from embedding_net.optim import build_optimizer

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)

    class NullLoss(keras.losses.Loss):
        """The mean of the first embedding coordinate: no distances, no mining."""

        def call(self, y_true, y_pred):
            return ops.mean(y_pred[:, 0])

    batch, mining = a.batches[0], a.minings[0]
    p = batch // a.images_per_class
    keras.utils.set_random_seed(a.seed)
    data = lib.omniglot_inputs(a.size, a.omniglot)
    y = data["y_train"]
    dataset = pk_dataset(y, int(y.max()) + 1, p, a.images_per_class, images=data["x_train"], seed=a.seed)
    model = build_embedding_model("conv4", (a.size, a.size, 1), a.embedding)
    triplet = TripletLoss(0.2, mining)

    segments = {"null": [], "mined": []}
    others = []
    for _ in range(a.rounds):
        for kind in ("null", "mined"):
            model.compile(optimizer=build_optimizer("adam", 1e-3), loss=NullLoss() if kind == "null" else triplet)
            timer = lib.step_timer(warmup=a.warmup, max_timed_seconds=a.max_seconds)
            model.fit(dataset, epochs=1, steps_per_epoch=a.steps, verbose=0, callbacks=[timer], shuffle=False)
            r = timer.result(batch)
            segments[kind].append(r)
            others.append(r["other_procs_cpu_cores"])

    # The loss and its gradient alone, on random unit embeddings.
    labels = tf.constant(np.repeat(np.arange(p), a.images_per_class).astype(np.int32))
    emb = tf.math.l2_normalize(tf.random.stateless_normal([batch, a.embedding], [a.seed, 1]), axis=1)

    def isolated(loss):
        @tf.function
        def f(e):
            with tf.GradientTape() as tape:
                tape.watch(e)
                value = loss(labels, e)
            return value, tape.gradient(value, e)

        f(emb)[1].numpy()
        times = []
        for _ in range(a.isolated_repeats):
            t0 = time.perf_counter()
            f(emb)[1].numpy()
            times.append(time.perf_counter() - t0)
        return round(1000 * statistics.median(times), 3)

    iso_mined, iso_null = isolated(triplet), isolated(NullLoss())
    med_null = statistics.median(s["median_ms"] for s in segments["null"])
    med_mined = statistics.median(s["median_ms"] for s in segments["mined"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    lib.worker_reply({
        "batch": batch, "mining": mining, "step_null_ms": round(med_null, 3), "step_mined_ms": round(med_mined, 3),
        "loss_and_mining_ms": round(med_mined - med_null, 3),
        "share_of_step": round((med_mined - med_null) / med_mined, 4),
        "isolated_loss_grad_ms": iso_mined, "isolated_null_grad_ms": iso_null,
        "isolated_share_of_step": round(iso_mined / med_mined, 4),
        "segments": segments, "other_cores_max": max((o for o in others if o is not None), default=None),
        "peak_rss_bytes": peak, "jit_compile": bool(model.jit_compile), "versions": lib.ml_versions()})


# --------------------------------------------------------------------------- driver
def mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def estimate_peak(measured, batch):
    """Peak RSS of batch-all at `batch` from the (batch, peak) pairs measured: baseline plus a
    B^2 term fitted on the two largest (an upper bound from one point)."""
    pts = sorted(measured)
    if not pts:
        return None
    if len(pts) == 1:
        b, m = pts[0]
        return m * (batch / b) ** 2
    (b1, m1), (b2, m2) = pts[-2], pts[-1]
    per = max((m2 - m1) / (b2 ** 2 - b1 ** 2), 0.0)
    return m2 + per * (batch ** 2 - b2 ** 2)


def main(argv=None):
    a = parse_args(argv)
    if a._worker:
        return worker(a)
    started = time.perf_counter()
    for b in a.batches:
        if b % a.images_per_class:
            raise SystemExit(f"batch {b} is not a multiple of --images-per-class {a.images_per_class}")
    have_peer = lib.peer_available(a.peer_python, a.peer_script)
    inputs = lib.omniglot_inputs(a.size, a.omniglot, a.peer_python if have_peer else None, a.peer_script)["info"]
    print(f"[bench] mining: batches {a.batches}, rules {a.minings}, {a.rounds} round(s) of null/mined segments "
          f"of {a.steps} steps ({a.warmup} warm-up)", flush=True)
    results, all_peaks, versions = [], [], None
    for batch in sorted(a.batches):
        for mining in a.minings:
            rec = {"batch": batch, "mining": mining}
            if mining == "all":
                est, avail = estimate_peak(all_peaks, batch), mem_available()
                if est is not None and avail is not None and est > 0.8 * avail:
                    rec.update({"skipped": f"estimated peak {est / 2**30:.1f} GiB "
                                           f"> 80% of the {avail / 2**30:.1f} GiB available"})
                    results.append(rec)
                    print(f"[B={batch} {mining}] skipped: {rec['skipped']}", flush=True)
                    continue
            cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "1", "--batches", str(batch),
                   "--minings", mining, "--images-per-class", str(a.images_per_class), "--size", str(a.size),
                   "--embedding", str(a.embedding), "--steps", str(a.steps), "--warmup", str(a.warmup),
                   "--max-seconds", str(a.max_seconds), "--rounds", str(a.rounds),
                   "--isolated-repeats", str(a.isolated_repeats), "--seed", str(a.seed), "--omniglot", a.omniglot]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            rc, out, err, wall, other_whole, js = lib.run_subprocess(
                cmd, timeout=a.timeout, log_path=os.path.join(lib.CACHE, "logs", NAME, f"b{batch}_{mining}.log"))
            rec.update({"rc": rc, "subprocess_wall_s": wall, "other_cores_whole_subprocess": other_whole})
            if rc != 0 or js is None:
                killed = rc in (-9, 137)
                rec["error"] = ("killed (likely out of memory)" if killed else
                                (err.strip().splitlines()[-1] if err.strip() else f"rc {rc}"))
                print(f"[B={batch} {mining}] ERROR: {rec['error']}", flush=True)
                results.append(rec)
                continue
            versions = versions or js.pop("versions", None)
            js.pop("versions", None)
            rec.update(js)
            rec["valid"], rec["invalid_reason"] = lib.validity(js.get("other_cores_max"), a.noise_threshold)
            if mining == "all":
                all_peaks.append((batch, js["peak_rss_bytes"]))
            print(f"[B={batch} {mining}] null {js['step_null_ms']:.1f} ms, mined {js['step_mined_ms']:.1f} ms: "
                  f"loss+mining {100 * js['share_of_step']:.1f}% of the step (isolated {js['isolated_loss_grad_ms']:.1f} ms)"
                  + ("" if rec["valid"] else f"  [INVALID: {rec['invalid_reason']}]"), flush=True)
            results.append(rec)

    headers = ["batch", "mining", "step, null loss (ms)", "step, mined loss (ms)", "loss + mining (ms)",
               "share of step", "loss+grad alone (ms)", "peak RSS (GiB)", "other procs (cores)", "valid"]
    rows = []
    for r in results:
        if r.get("skipped") or r.get("error"):
            rows.append([r["batch"], r["mining"], r.get("skipped") or "ERROR: " + r["error"]] + [""] * 7)
            continue
        rows.append([r["batch"], r["mining"], lib.fmt(r["step_null_ms"]), lib.fmt(r["step_mined_ms"]),
                     lib.fmt(r["loss_and_mining_ms"]), lib.fmt(r["share_of_step"], 1, True),
                     lib.fmt(r["isolated_loss_grad_ms"]), lib.fmt(r["peak_rss_bytes"] / 2**30, 2),
                     lib.fmt(r["other_cores_max"], 3), "yes" if r["valid"] else "NO"])
    lib.print_table("share of a training step spent in the triplet loss and its mining", headers, rows)
    config = {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "output"}
    lib.finish(NAME, a, {"kind": NAME, "config": config, "inputs": inputs, "versions": versions,
                            "results": results}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
