"""Training and embedding throughput on the networks photo users train, ours (float32 and
bfloat16) against the peer (pytorch-metric-learning on PyTorch, float32), alternately in one run.

    python bench/backbones.py                                # every network, 5 rounds
    python bench/backbones.py --networks resnet18_64 --rounds 3

Networks: conv4 at 28 px (1 channel, batch 128 = 32 x 4), ResNet18 (ImageNet stem) at 64 and
112 px and ResNet50 at 224 px (3 channels; batch 64 = 16 x 4, and 32 = 8 x 4 for ResNet50).
Both sides train the same network (ours: `build_embedding_model`, theirs: peer_pml.py's
`build_model`, or bench/peer_backbones.py's ResNet50) on random uint8 images of P x K labels
(a step's cost does not depend on the pixels) with the semi-hard triplet loss (margin 0.2) and
Adam 1e-4. A step is timed whole (batch, forward, mining, loss, backward, update); images/s =
batch / median step after warm-up. Embedding throughput (conv4 and ResNet50): images/s of
`embed_images` (ours: `model.predict`, batch 256) against the peer's `model.eval()` forward under
`torch.no_grad()` at batch 256, median of --embed-repeats.

Each side runs in its own subprocess, in the order ours float32, ours bfloat16, peer, for
--rounds rounds; bfloat16 only where the CPU has bfloat16 instructions (recorded). A run is
valid when other processes used at most --noise-threshold cores during its timed steps.
Writes bench/results/backbones.json.
"""

import argparse
import os
import statistics
import sys
import time

import lib
from precision import cpu_flags

NAME = "backbones"
# name: (backbone, side, channels, classes per batch, images per class, steps, embedding throughput)
NETWORKS = {
    "conv4_28": ("conv4", 28, 1, 32, 4, 60, True),
    "resnet18_64": ("resnet18", 64, 3, 16, 4, 25, False),
    "resnet18_112": ("resnet18", 112, 3, 16, 4, 15, False),
    "resnet50_224": ("resnet50", 224, 3, 8, 4, 10, True),
}
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def worker(a):
    import embedding_net  # noqa: F401  (before TensorFlow: sets TF_ENABLE_ONEDNN_OPTS)
    import keras
    import numpy as np

    from embedding_net.data.sampling import pk_dataset
    from embedding_net.inference.encodings import embed_images
    from embedding_net.losses import TripletLoss
    from embedding_net.models import build_embedding_model
    from embedding_net.optim import build_optimizer

    backbone, side, channels, p, k, _, _ = NETWORKS[a.network]
    keras.utils.set_random_seed(a.seed)
    keras.mixed_precision.set_dtype_policy(POLICIES[a.precision])
    rng = np.random.default_rng(a.seed)
    classes = 4 * p
    labels = np.repeat(np.arange(classes), 8).astype("int32")
    images = rng.integers(0, 256, (len(labels), side, side, channels), dtype=np.uint8)
    model = build_embedding_model(backbone, (side, side, channels), 64)
    model.compile(optimizer=build_optimizer("adam", 1e-4), loss=TripletLoss(0.2, "semi_hard"))
    timer = lib.step_timer(warmup=a.warmup)
    model.fit(pk_dataset(labels, classes, p, k, images=images, seed=a.seed), epochs=1, steps_per_epoch=a.steps,
              verbose=0, callbacks=[timer])
    result = timer.result(p * k)
    if a.embed_repeats:
        batch = rng.integers(0, 256, (a.embed_batch, side, side, channels), dtype=np.uint8)
        embed_images(model, batch, a.embed_batch)
        times = []
        for _ in range(a.embed_repeats):
            started = time.perf_counter()
            embed_images(model, batch, a.embed_batch)
            times.append(time.perf_counter() - started)
        result["embed_images_per_sec"] = round(a.embed_batch / statistics.median(times), 1)
    result.update({"side": f"ours_{a.precision}", "params": int(model.count_params()), "versions": lib.ml_versions()})
    lib.worker_reply(result)


def commands(a, network, seed):
    backbone, side, channels, p, k, steps, embeds = NETWORKS[network]
    steps = 5 if a.quick else steps
    warmup = str(min(a.warmup, steps - 2))
    repeats = str(a.embed_repeats if embeds else 0)
    ours = [sys.executable, os.path.abspath(__file__), "--_worker", "1", "--network", network, "--steps", str(steps),
            "--warmup", warmup, "--seed", str(seed), "--embed-repeats", repeats, "--embed-batch", str(a.embed_batch)]
    sides = {"ours_float32": ours + ["--precision", "float32"]}
    if cpu_flags() or a.bfloat16_anyway:
        sides["ours_bfloat16"] = ours + ["--precision", "bfloat16"]
    if lib.peer_available(a.peer_python, a.peer_script):
        sides["peer"] = [a.peer_python, os.path.join(lib.BENCH, "peer_backbones.py"), "--network", backbone,
                         "--size", str(side), "--channels", str(channels), "--classes-per-batch", str(p),
                         "--images-per-class", str(k), "--steps", str(steps), "--warmup", warmup,
                         "--seed", str(seed), "--embed-repeats", repeats, "--embed-batch", str(a.embed_batch),
                         "--peer-script", a.peer_script]
    return sides


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--embed-batch", type=int, default=256)
    ap.add_argument("--embed-repeats", type=int, default=5)
    ap.add_argument("--bfloat16-anyway", action="store_true", help="measure bfloat16 without the CPU flags")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--network", help=argparse.SUPPRESS)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    lib.add_peer_args(ap)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a._worker:
        return worker(a)
    if a.quick:
        a.rounds, a.embed_repeats = 1, 2
    started, runs = time.perf_counter(), []
    for network in a.networks:
        for round_index in range(a.rounds):
            for side, cmd in commands(a, network, a.seed + round_index).items():
                rc, _, err, wall, _, reply = lib.run_subprocess(cmd, timeout=1800)
                if rc or not reply:
                    raise SystemExit(f"[backbones] {network} {side} failed: {err[-2000:]}")
                reply.update({"network": network, "side": side, "round": round_index, "wall_s": round(wall, 1)})
                reply["valid"], reply["invalid_reason"] = lib.validity(reply.get("other_procs_cpu_cores"),
                                                                       a.noise_threshold)
                runs.append(reply)
                print(f"[backbones] {network} round {round_index + 1} {side}: {reply['images_per_sec_median']:.1f} "
                      f"images/s" + ("" if reply["valid"] else f" [INVALID: {reply['invalid_reason']}]"), flush=True)
    summary, rows = summarise(a.networks, runs)
    lib.print_table("training images/s (median of valid runs); ratios against the peer, per round",
                    ["network", "ours float32", "ours bfloat16", "peer", "float32 / peer", "bfloat16 / peer",
                     "embedding: ours / peer"], rows)
    lib.finish(NAME, a, {"kind": NAME, "cpu_bf16_flags": cpu_flags(), "summary": summary, "runs": runs}, started)
    return 0


def summarise(networks, runs):
    """Per network: median images/s of each side over its valid runs, and the median over
    rounds of the per-round ratio to the peer (both runs of a round valid)."""
    summary, rows = [], []
    for network in networks:
        mine = [r for r in runs if r["network"] == network]
        record = {"network": network}
        for side in ("ours_float32", "ours_bfloat16", "peer"):
            values = [r["images_per_sec_median"] for r in mine if r["side"] == side and r["valid"]]
            record[f"{side}_images_per_s"] = statistics.median(values) if values else None
            embeds = [r["embed_images_per_sec"] for r in mine if r["side"] == side and r.get("embed_images_per_sec")]
            record[f"{side}_embed_images_per_s"] = statistics.median(embeds) if embeds else None
        for side in ("ours_float32", "ours_bfloat16"):
            ratios = []
            for round_index in sorted({r["round"] for r in mine}):
                pair = {r["side"]: r for r in mine if r["round"] == round_index}
                if side in pair and "peer" in pair and pair[side]["valid"] and pair["peer"]["valid"]:
                    ratios.append(pair[side]["images_per_sec_median"] / pair["peer"]["images_per_sec_median"])
            record[f"{side}_over_peer"] = statistics.median(ratios) if ratios else None
            record[f"{side}_over_peer_range"] = [min(ratios), max(ratios)] if ratios else None
        best = max((record[f"{s}_embed_images_per_s"] or 0) for s in ("ours_float32", "ours_bfloat16"))
        peer_embed = record["peer_embed_images_per_s"]
        record["embed_best_ours_over_peer"] = best / peer_embed if best and peer_embed else None
        summary.append(record)
        rows.append([network] + [lib.fmt(record[f"{s}_images_per_s"]) for s in ("ours_float32", "ours_bfloat16", "peer")]
                    + [lib.fmt(record[f"{s}_over_peer"], 2) for s in ("ours_float32", "ours_bfloat16")]
                    + [lib.fmt(record["embed_best_ours_over_peer"], 2)])
    return summary, rows


if __name__ == "__main__":
    sys.exit(main())
