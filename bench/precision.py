"""Training throughput in float32 against bfloat16 (Keras mixed precision), ours only, for the
networks photo users train: conv4 at 28 px, ResNet18 at 64 px, ResNet50 at 224 px.

    python bench/precision.py                      # alternating float32 / bfloat16 rounds
    python bench/precision.py --networks conv4 --rounds 3

Each measurement runs in its own process on random uint8 images with P x K labels (the step
cost does not depend on the pixels), with the in-batch semi-hard triplet loss and Adam; images/s
= batch / median step after warm-up. The CPU's bfloat16 instructions (AVX512-BF16, AMX-BF16) are
recorded with the machine. Writes bench/results/precision.json.
"""

import argparse
import os
import statistics
import sys
import time

import lib

NAME = "precision"
NETWORKS = {  # name: (backbone, side, channels, classes per batch, images per class, steps)
    "conv4": ("conv4", 28, 1, 32, 4, 60),
    "resnet18": ("resnet18", 64, 3, 16, 4, 30),
    "resnet50": ("resnet50", 224, 3, 8, 4, 12),
}
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def cpu_flags():
    """The CPU's bfloat16 and AMX flags, sorted, for the result's record."""
    from embedding_net.cpu import cpu_flags as all_flags

    return sorted(flag for flag in all_flags() if "bf16" in flag or flag.startswith("amx"))


def worker(a):
    import embedding_net  # noqa: F401  (before TensorFlow: sets TF_ENABLE_ONEDNN_OPTS)
    import keras
    import numpy as np

    from embedding_net.data.sampling import pk_dataset
    from embedding_net.losses import TripletLoss
    from embedding_net.models import build_embedding_model
    from embedding_net.optim import build_optimizer

    backbone, side, channels, p, k, _ = NETWORKS[a.network]
    keras.utils.set_random_seed(a.seed)
    keras.mixed_precision.set_dtype_policy(POLICIES[a.precision])
    rng = np.random.default_rng(a.seed)
    labels = np.repeat(np.arange(64), 8).astype("int32")
    images = rng.integers(0, 256, (len(labels), side, side, channels), dtype=np.uint8)
    model = build_embedding_model(backbone, (side, side, channels), 128)
    model.compile(optimizer=build_optimizer("adam", 1e-4), loss=TripletLoss(0.2, "semi_hard"))
    timer = lib.step_timer(warmup=a.warmup)
    model.fit(pk_dataset(labels, 64, p, k, images=images, seed=a.seed), epochs=1, steps_per_epoch=a.steps,
              verbose=0, callbacks=[timer])
    result = timer.result(p * k)
    result.update({"network": a.network, "precision": a.precision, "versions": lib.ml_versions()})
    lib.worker_reply(result)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=sorted(NETWORKS))
    ap.add_argument("--rounds", type=int, default=2, help="rounds of every precision per network")
    ap.add_argument("--precisions", nargs="+", choices=sorted(POLICIES), default=["float32", "bfloat16"],
                    help="float32 first: the ratios are to it (float16 is for GPUs)")
    ap.add_argument("--steps", type=int, default=None, help="steps per measurement (default: per network)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--network", help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a._worker:
        return worker(a)
    started, runs = time.perf_counter(), []
    for network in a.networks:
        steps = a.steps or (5 if a.quick else NETWORKS[network][5])
        for round_index in range(a.rounds):
            for precision in a.precisions:
                cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "1", "--network", network,
                       "--precision", precision, "--steps", str(steps), "--warmup", str(min(a.warmup, steps - 2)),
                       "--seed", str(a.seed + round_index)]
                rc, _, err, wall, other, reply = lib.run_subprocess(cmd, timeout=1800)
                if rc or not reply:
                    raise SystemExit(f"[precision] {network} {precision} failed: {err[-2000:]}")
                reply.update({"round": round_index, "wall_s": round(wall, 1), "other_cores_run": other})
                runs.append(reply)
                print(f"[precision] {network} {precision}: {reply['images_per_sec_median']:.1f} images/s", flush=True)
    rows, summary = [], []
    for network in a.networks:
        median = {p: statistics.median([r["images_per_sec_median"] for r in runs
                                        if r["network"] == network and r["precision"] == p]) for p in a.precisions}
        base = median[a.precisions[0]]
        summary.append({"network": network, **{f"{p}_images_per_s": m for p, m in median.items()},
                        **{f"{p}_over_{a.precisions[0]}": m / base for p, m in median.items() if p != a.precisions[0]}})
        rows.append([network] + [lib.fmt(median[p]) for p in a.precisions]
                    + [lib.fmt(median[p] / base, 2) for p in a.precisions[1:]])
    lib.print_table(f"median images/s; ratios to {a.precisions[0]}", ["network"] + a.precisions
                    + [f"{p} / {a.precisions[0]}" for p in a.precisions[1:]], rows)
    lib.finish(NAME, a, {"kind": "precision", "cpu_bf16_flags": cpu_flags(), "summary": summary, "runs": runs},
               started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
