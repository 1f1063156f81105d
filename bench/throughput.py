"""Training throughput: embedding_net (Keras 3 / TensorFlow, `model.fit` over `pk_dataset`)
against the peer (pytorch-metric-learning on PyTorch CPU), alternately in one run.

Both sides train the same network on the same inputs: conv4 (4 x [conv3x3-64, BN, ReLU,
maxpool2]) at --size px, a dense projection to --embedding dimensions, P x K = 32 x 4 = 128
images per batch from the 964 Omniglot background characters, the triplet loss with margin 0.2
and --mining, Adam 1e-3. Inputs: the peer's own preprocessing (`--save-inputs`: 105 -> size
with PIL bilinear on float images, ink = 1), quantised to the uint8 images our model takes (see
lib.omniglot_inputs). Each side runs in its own subprocess (threads are not shared), A = ours,
B = peer, A B A B ... for --rounds rounds; a step is timed from the end of the previous one
(batch fetch, forward, mining, loss, backward, update), the median after --warmup steps.

Ours is trained the way train.py trains: `model.compile(optimizer, TripletLoss, metrics=
collapse_monitors)` (the monitors can be left out with --no-monitors), `model.fit` on
`pk_dataset(images=...)` (decoded in memory), TF backend, oneDNN on, Keras' default jit_compile.

Differences that remain by design: at --size 56 the peer flattens the 3x3x64 map (576 -> 64
projection), ours global-average-pools it (64 -> 64); the peer's convolutions have a bias, ours
none (the batch norm after each cancels it, so both compute the same functions); ours trains
batch norm with its closed-form gradient (embedding_net.models.normalization); initialisations differ
(Keras Glorot vs PyTorch Kaiming-uniform); Adam epsilon 1e-7 (Keras) vs 1e-8; and each library
applies its own rule of the mining name (see lib.PEER_MINER).

A pair is valid only when, during both timings, other processes used at most
--noise-threshold cores (ours: measured in the worker over the timed steps; the peer: its own
JSON field over its training). Ratios of invalid pairs are shown but never summarised.
"""

import argparse
import os
import statistics
import sys
import time

import lib

NAME = "throughput"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--size", type=int, default=28, help="input side in pixels (28 or 56)")
    ap.add_argument("--mining", choices=["semi_hard", "hard", "all"], default="semi_hard")
    ap.add_argument("--rounds", type=int, default=5, help="ours/peer pairs")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimiser steps per run (default: 200 at 28 px, scaled by (28/size)^2, at least 60)")
    ap.add_argument("--warmup", type=int, default=None, help="steps left out of the median (default: steps // 10)")
    ap.add_argument("--classes-per-batch", type=int, default=32)
    ap.add_argument("--images-per-class", type=int, default=4)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=None,
                    help="peer: torch threads (default: all cores); ours: TF intra/inter-op threads "
                         "if given (default: TensorFlow's own, all cores)")
    ap.add_argument("--no-monitors", action="store_true",
                    help="compile ours without train.py's collapse monitors (not how train.py trains)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=["ours", "peer"], default=None, help="run one side only (no ratios)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess")
    lib.add_peer_args(ap)
    lib.add_common_args(ap, NAME + "[_s<size>][_<mining>]")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds = 1 if a.rounds == 5 else a.rounds
        a.steps = a.steps or 8
        a.warmup = 3 if a.warmup is None else a.warmup
    if a.steps is None:
        a.steps = max(60, int(round(200 * (28 / a.size) ** 2)))
    if a.warmup is None:
        a.warmup = max(3, a.steps // 10)
    if a.steps <= a.warmup:
        ap.error("--steps must exceed --warmup")
    return a


def result_name(a):
    return NAME + (f"_s{a.size}" if a.size != 28 else "") + (f"_{a.mining}" if a.mining != "semi_hard" else "")


# --------------------------------------------------------------------------- worker: ours
def worker_ours(a):
    import embedding_net  # noqa: F401  (before TensorFlow: sets TF_ENABLE_ONEDNN_OPTS)
    import keras
    import tensorflow as tf

    from embedding_net.losses.triplet import TripletLoss
    from embedding_net.models.builders import build_embedding_model
    from embedding_net.mining.monitors import collapse_monitors
    from embedding_net.data.sampling import pk_dataset
    from embedding_net.optim import build_optimizer

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    keras.utils.set_random_seed(a.seed)
    data = lib.omniglot_inputs(a.size, a.omniglot)
    x, y = data["x_train"], data["y_train"]
    model = build_embedding_model("conv4", (a.size, a.size, 1), a.embedding)
    model.compile(optimizer=build_optimizer("adam", a.lr), loss=TripletLoss(a.margin, a.mining),
                  metrics=None if a.no_monitors else collapse_monitors(a.margin))
    batch = a.classes_per_batch * a.images_per_class
    dataset = pk_dataset(y, int(y.max()) + 1, a.classes_per_batch, a.images_per_class, images=x, seed=a.seed)
    timer = lib.step_timer(warmup=a.warmup)
    history = model.fit(dataset, epochs=1, steps_per_epoch=a.steps, verbose=0, callbacks=[timer],
                        shuffle=False)
    result = timer.result(batch)
    result.update({"side": "ours", "loss_last": float(history.history["loss"][-1]),
                   "jit_compile": bool(model.jit_compile), "params": int(model.count_params()),
                   "monitors": not a.no_monitors, "tf_threads": a.threads or "default",
                   "inputs": data["info"], "versions": lib.ml_versions()})
    lib.worker_reply(result)


# --------------------------------------------------------------------------- driver
def worker_cmd(a):
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "ours", "--size", str(a.size),
           "--mining", a.mining, "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--classes-per-batch", str(a.classes_per_batch), "--images-per-class", str(a.images_per_class),
           "--embedding", str(a.embedding), "--margin", str(a.margin), "--lr", str(a.lr),
           "--seed", str(a.seed), "--omniglot", a.omniglot]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.no_monitors:
        cmd.append("--no-monitors")
    return cmd


def peer_cmd(a, seed):
    return [a.peer_python, a.peer_script, "--omniglot", lib.omniglot_dir(a.omniglot), "--backbone", "conv4",
            "--size", str(a.size), "--batch", str(a.classes_per_batch * a.images_per_class),
            "--m-per-class", str(a.images_per_class), "--steps", str(a.steps), "--warmup", str(a.warmup),
            "--embedding", str(a.embedding), "--loss", "triplet", "--miner", lib.PEER_MINER[a.mining],
            "--margin", str(a.margin), "--lr", str(a.lr), "--threads", str(a.threads or os.cpu_count()),
            "--seed", str(seed), "--episodes", "2", "--no-raw-baseline", "--log-every", "1000000"]


def run_side(a, side, round_index, log_dir):
    seed = a.seed + round_index
    if side == "ours":
        cmd = worker_cmd(a)
        cmd[cmd.index("--seed") + 1] = str(seed)
    else:
        cmd = peer_cmd(a, seed)
    rc, out, err, wall, other_whole, js = lib.run_subprocess(
        cmd, timeout=a.timeout, log_path=os.path.join(log_dir, f"round{round_index}_{side}.log"))
    rec = {"side": side, "rc": rc, "subprocess_wall_s": wall, "other_cores_whole_subprocess": other_whole}
    if rc != 0 or js is None:
        rec["error"] = err.strip().splitlines()[-1] if err.strip() else f"rc {rc}, no JSON"
        return rec
    if side == "ours":
        rec.update({k: js.get(k) for k in ("images_per_sec_median", "median_ms", "p10_ms", "p90_ms", "steps",
                                           "timed_steps", "first_step_ms", "loss_last", "jit_compile",
                                           "params", "monitors", "tf_threads")})
        rec["other_cores"] = js.get("other_procs_cpu_cores")
        rec["other_cores_window"] = "timed steps (after warm-up)"
        rec["_inputs"], rec["_versions"] = js.get("inputs"), js.get("versions")
    else:
        t = js.get("train") or {}
        rec.update({"images_per_sec_median": t.get("images_per_sec_median"), "median_ms": t.get("median_step_ms"),
                    "p10_ms": t.get("p10_step_ms"), "p90_ms": t.get("p90_step_ms"), "steps": t.get("steps"),
                    "timed_steps": (t.get("steps") or 0) - (t.get("warmup_steps_excluded") or 0),
                    "loss_last": t.get("loss_last20_mean"), "mined_last": t.get("mined_last20_mean"),
                    "params": js.get("params"), "torch_threads": (js.get("host") or {}).get("torch_threads")})
        rec["other_cores"] = t.get("other_procs_cpu_cores_during_train")
        rec["other_cores_window"] = "all training steps (peer's own field)"
        rec["_versions"] = js.get("versions")
    rec["valid"], rec["invalid_reason"] = lib.validity(rec["other_cores"], a.noise_threshold)
    return rec


def main(argv=None):
    a = parse_args(argv)
    if a._worker == "ours":
        return worker_ours(a)
    started = time.perf_counter()
    name = result_name(a)
    sides = [a.only] if a.only else ["ours", "peer"]
    have_peer = lib.peer_available(a.peer_python, a.peer_script)
    if "peer" in sides and not have_peer:
        print(f"[bench] peer not found ({a.peer_python}, {a.peer_script}): see bench/README.md; "
              "running ours only", flush=True)
        sides = ["ours"]
    print(f"[bench] {name}: conv4 {a.size}px, emb {a.embedding}, batch {a.classes_per_batch}x{a.images_per_class}, "
          f"triplet {a.mining} margin {a.margin}, Adam {a.lr}; {a.steps} steps ({a.warmup} warm-up) x "
          f"{a.rounds} rounds, sides {sides}", flush=True)
    inputs = lib.omniglot_inputs(a.size, a.omniglot, a.peer_python if have_peer else None, a.peer_script)["info"]
    log_dir = os.path.join(lib.CACHE, "logs", name)
    pairs = []
    versions = {}
    for r in range(a.rounds):
        pair = {"round": r + 1}
        for side in sides:
            rec = run_side(a, side, r, log_dir)
            versions.setdefault(side, rec.pop("_versions", None))
            rec.pop("_inputs", None)
            pair[side] = rec
            msg = rec.get("error") or (f"{lib.fmt(rec.get('images_per_sec_median'))} img/s, median "
                                       f"{lib.fmt(rec.get('median_ms'))} ms, others {rec.get('other_cores')} cores"
                                       + ("" if rec["valid"] else "  [INVALID: " + rec["invalid_reason"] + "]"))
            print(f"[round {r + 1}/{a.rounds}] {side}: {msg}", flush=True)
        if len(sides) == 2:
            o, p = pair["ours"], pair["peer"]
            if o.get("images_per_sec_median") and p.get("images_per_sec_median"):
                pair["ratio_ours_over_peer"] = round(o["images_per_sec_median"] / p["images_per_sec_median"], 4)
            else:
                pair["ratio_ours_over_peer"] = None
            reasons = [f"{s}: {pair[s].get('error') or pair[s]['invalid_reason']}" for s in sides
                       if pair[s].get("error") or not pair[s]["valid"]]
            pair["valid"] = not reasons and pair["ratio_ours_over_peer"] is not None
            pair["invalid_reason"] = "; ".join(reasons)
        pairs.append(pair)

    def med(values):
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 4) if values else None

    summary = {"pairs": len(pairs)}
    for side in sides:
        runs = [p[side] for p in pairs]
        summary[f"{side}_images_per_sec_median_valid"] = med(
            [r.get("images_per_sec_median") for r in runs if r.get("valid") and not r.get("error")])
        summary[f"{side}_images_per_sec_median_all"] = med([r.get("images_per_sec_median") for r in runs])
        summary[f"{side}_valid_runs"] = sum(1 for r in runs if r.get("valid") and not r.get("error"))
    if len(sides) == 2:
        valid = [p for p in pairs if p["valid"]]
        summary["valid_pairs"] = len(valid)
        summary["ratio_median_valid_pairs"] = med([p["ratio_ours_over_peer"] for p in valid])
        summary["ratio_min_valid_pairs"] = min((p["ratio_ours_over_peer"] for p in valid), default=None)
        summary["ratio_max_valid_pairs"] = max((p["ratio_ours_over_peer"] for p in valid), default=None)
        summary["verdict"] = (f"ours/peer = {summary['ratio_median_valid_pairs']} (median of {len(valid)} valid pairs)"
                              if valid else "NO VALID PAIR: the machine was noisy (or a side failed); "
                                            "no ratio is reported")

    headers = ["round", "side", "images/s (median)", "step ms (median)", "p10-p90 ms", "other procs (cores)", "valid"]
    rows = []
    for p in pairs:
        for side in sides:
            r = p[side]
            rows.append([p["round"], side, lib.fmt(r.get("images_per_sec_median")), lib.fmt(r.get("median_ms")),
                         f"{lib.fmt(r.get('p10_ms'))}-{lib.fmt(r.get('p90_ms'))}",
                         lib.fmt(r.get("other_cores"), 3),
                         "ERROR: " + r["error"] if r.get("error") else ("yes" if r["valid"] else "NO")])
        if len(sides) == 2:
            rows.append([p["round"], "ratio ours/peer", lib.fmt(p["ratio_ours_over_peer"], 3), "", "", "",
                         "yes" if p["valid"] else "NO (" + p["invalid_reason"] + ")"])
    lib.print_table(f"{name}: conv4 {a.size}px, batch {a.classes_per_batch * a.images_per_class}, {a.mining}",
                       headers, rows)
    if len(sides) == 2:
        print(summary["verdict"], flush=True)
    config = {k: v for k, v in vars(a).items() if not k.startswith("_") and k not in ("output",)}
    config.update({"batch": a.classes_per_batch * a.images_per_class, "peer_miner": lib.PEER_MINER[a.mining],
                   "omniglot": lib.omniglot_dir(a.omniglot)})
    lib.finish(name, a, {"kind": NAME, "config": config, "inputs": inputs, "versions": versions,
                            "pairs": pairs, "summary": summary}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
