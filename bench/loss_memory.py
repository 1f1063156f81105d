"""Peak memory of every loss and its gradient at batch 256, 1,024 and 8,192 (embedding 128).

Each (loss, batch) runs in its own subprocess: P x K labels (K = 4: B / 4 classes), random unit
embeddings [B, 128], and a traced function that returns the loss and its gradient with respect to the
embeddings. The function runs once at batch 16 to warm up; then the process's resident-memory
high-water mark is reset (/proc/self/clear_refs) and the function runs at B: peak = VmHWM - VmRSS
before that call, i.e. what the loss and its gradient allocate beyond the inputs, with the
tracing for B's shape (a few MiB; B = 256 shows it). The time is a second call's, traced already.
TensorFlow runs independent ops in parallel, so the peak varies between runs: each (loss, batch)
runs in `--repeats` processes and the table shows the largest peak and the shortest time. Losses with class
centres (ArcFace, CosFace, Proxy Anchor) take 1,000 classes, the batch's labels modulo 1,000.
(Until 2026-12-06 every loss took those labels; at 8,192 that gave 48 classes 12 images each,
so the pair losses took their paths for many positives per anchor.) One B x B float32 matrix is 256 MiB
at 8,192; the goal is the loss with its gradient within 2 GiB there.

    python bench/loss_memory.py                       # bench/results/loss_memory.json
    python bench/loss_memory.py --batches 256 1024    # a quick look
"""

import argparse
import json
import sys
import time

import lib

NAME = "loss_memory"
GOAL_BYTES = 2 * 2**30
CENTRES = 1000

# name -> the registry name and settings; the same table as bench/parity.py's ours.
LOSSES = {
    "triplet (semi_hard)": {"name": "triplet", "mining": "semi_hard"},
    "triplet (hard)": {"name": "triplet", "mining": "hard"},
    "triplet (all)": {"name": "triplet", "mining": "all"},
    "contrastive": {"name": "contrastive"},
    "multi_similarity": {"name": "multi_similarity"},
    "multi_similarity + miner": {"name": "multi_similarity", "mining_epsilon": 0.1},
    "supcon": {"name": "supcon"},
    "circle": {"name": "circle"},
    "arcface": {"name": "arcface", "centres": True},
    "cosface": {"name": "cosface", "centres": True},
    "proxy_anchor": {"name": "proxy_anchor", "centres": True},
}


def _status(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def worker(name, batch, dim, fold_all=False):
    import numpy as np

    import embedding_net  # noqa: F401  (before TensorFlow, see bench/lib)
    import tensorflow as tf

    from embedding_net.losses import batch_loss

    settings = dict(LOSSES[name])
    registered = settings.pop("name")
    settings.pop("centres", None)
    def batch_of(size):
        rng = np.random.default_rng(0)
        # A P x K batch, K = 4; the class-centre losses fold its classes onto their CENTRES.
        folded = fold_all or "centres" in LOSSES[name]
        classes = np.arange(size // 4) % CENTRES if folded else np.arange(size // 4)
        labels = tf.constant(np.repeat(classes, 4).astype("int32"))
        embeddings = rng.normal(size=(size, dim)).astype("float32")
        return labels, tf.constant(embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True))

    value_of, _ = batch_loss(registered, num_classes=CENTRES, **settings)

    @tf.function
    def loss_and_gradient(labels, e):
        with tf.GradientTape() as tape:
            tape.watch(e)
            value = value_of(labels, e)
        return value, tape.gradient(value, e)

    # Warm up at batch 16 (TensorFlow's start-up, the centres): the allocator's pools then hold
    # nothing of batch B's size, which a warm-up at B would leave behind and hide.
    value, gradient = loss_and_gradient(*batch_of(16))
    float(value), gradient.numpy()
    labels, embeddings = batch_of(batch)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident size
    before = _status("VmRSS")
    value, gradient = loss_and_gradient(labels, embeddings)  # traced for B, then run
    finite = bool(np.isfinite(float(value)) and np.isfinite(gradient.numpy()).all())
    peak = _status("VmHWM") - before
    started = time.perf_counter()
    float(loss_and_gradient(labels, embeddings)[0])  # traced already: the loss and gradient alone
    lib.worker_reply({"peak_bytes": peak, "seconds": round(time.perf_counter() - started, 3), "finite": finite})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 8192])
    parser.add_argument("--losses", nargs="+", choices=sorted(LOSSES), default=list(LOSSES))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3,
                        help="processes per (loss, batch): TensorFlow runs independent ops in parallel, so the "
                             "peak varies by a few hundred MiB between runs; the largest is reported")
    parser.add_argument("--fold-all", action="store_true",
                        help="every loss takes the labels modulo 1,000 (the workload before 2026-12-06: at 8,192, "
                             "48 classes have 12 images)")
    parser.add_argument("--output", default=lib.default_output(NAME))
    parser.add_argument("--worker", nargs=2, metavar=("LOSS", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), args.dim, args.fold_all)
    rows = {}
    for name in args.losses:
        for batch in args.batches:
            replies = []
            for _ in range(args.repeats):
                rc, out, err, wall, _, reply = lib.run_subprocess(
                    [sys.executable, __file__, "--worker", name, str(batch), "--dim", str(args.dim),
                     *(["--fold-all"] if args.fold_all else [])], timeout=1800)
                replies.append(reply if reply is not None else
                               {"error": (err or out).strip().splitlines()[-1:] or [f"exit {rc}"]})
            good = [r for r in replies if "peak_bytes" in r]
            reply = replies[0] if len(good) < len(replies) else {
                "peak_bytes": max(r["peak_bytes"] for r in good), "peaks": [r["peak_bytes"] for r in good],
                "seconds": min(r["seconds"] for r in good), "finite": all(r["finite"] for r in good)}
            rows.setdefault(name, {})[str(batch)] = reply
            print(name, batch, json.dumps(reply), flush=True)
    result = {"kind": NAME, "dim": args.dim, "labels": "folded" if args.fold_all else "p_by_k", "repeats": args.repeats, "centres": CENTRES, "goal_bytes": GOAL_BYTES, "losses": rows,
              "machine": lib.host_info()}
    lib.atomic_write_json(args.output, result)

    def cell(reply):
        if "peak_bytes" not in reply:
            return "failed"
        mark = "" if reply["peak_bytes"] <= GOAL_BYTES else " (over 2 GiB)"
        return f"{reply['peak_bytes'] / 2**20:,.0f} MiB, {reply['seconds']:.2f} s{mark}"

    lib.print_table(f"Loss + gradient, peak memory and time (embedding {args.dim}; {lib.host_info()['cpu']})",
                    ["loss", *[f"B = {b:,}" for b in args.batches]],
                    [[name, *[cell(rows[name][str(b)]) for b in args.batches]] for name in rows])
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
