"""Accuracy at equal wall-clock training budgets: embedding_net against the peer
(pytorch-metric-learning), on identical inputs, evaluated on identical tasks.

For each budget S in --budgets, ours then the peer train for S seconds of wall clock (from
just before the first step, tracing included for ours; the step in flight is finished), each in
its own subprocess, then both are evaluated on the 659 Omniglot evaluation characters:

  * the official 20-way one-shot task (Lake et al.: 20 runs x 20 trials = 400 trials);
  * random 20-way and 5-way 1-shot episodes (--episodes each), drawn exactly as the peer draws
    them: one numpy.random.default_rng(--episode-seed) for both settings, 20-way first, then
    5-way; per episode the characters, then per character (support drawer, query drawer). Ours
    draws them with embedding_net.evaluation.episodes.sample_episodes fed that same Generator; the sha1 of
    the episode indices is compared with the peer's (`episodes_sha1_16`);
  * precision@1, R-precision and MAP@R, leave-one-out over the 13,180 evaluation images.

Ours uses its own functions: embedding_net.evaluation.nearest.oneshot_accuracy,
embedding_net.evaluation.episodes.episode_accuracy (95% half-width with the population std; the peer uses
ddof=1, a difference of 0.05% of the half-width at 1,000 episodes) and
embedding_net.evaluation.retrieval.retrieval_metrics. Network, inputs, loss, batch and optimiser are those of
bench/throughput.py (conv4 28 px, embedding 64, 32 x 4, triplet semi-hard margin 0.2, Adam 1e-3
constant: a time budget has no schedule length). Ours compiles train.py's collapse monitors
unless --no-monitors. A budget of 0 evaluates the untrained networks.

Steps done within a budget depend on the machine being quiet: each side records the CPU used by
other processes during its training, and a budget whose runs exceed --noise-threshold is marked
invalid.
"""

import argparse
import hashlib
import os
import sys
import time

import lib

NAME = "accuracy"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--budgets", type=float, nargs="+", default=[120, 600], help="training seconds (0 = untrained)")
    ap.add_argument("--mining", choices=["semi_hard", "hard", "all"], default="semi_hard")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--classes-per-batch", type=int, default=32)
    ap.add_argument("--images-per-class", type=int, default=4)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--episodes", type=int, default=1000, help="random episodes per N-way setting")
    ap.add_argument("--episode-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="as in throughput.py")
    ap.add_argument("--no-monitors", action="store_true")
    ap.add_argument("--only", choices=["ours", "peer"], default=None)
    ap.add_argument("--timeout", type=int, default=None, help="seconds per subprocess (default: budget + 1800)")
    lib.add_peer_args(ap)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a.quick:
        if a.budgets == [120, 600]:
            a.budgets = [10]
        if a.episodes == 1000:
            a.episodes = 50
    return a


# --------------------------------------------------------------------------- worker: ours
def peer_style_episodes(n_classes, drawers, episodes, seed):
    """Our sample_episodes fed one shared Generator, 20-way then 5-way (the peer's order);
    returns {n: (support [E, n], query [E, n], sha1_16)} like peer_pml.make_episodes."""
    import numpy as np

    from embedding_net.evaluation.episodes import sample_episodes

    labels = np.repeat(np.arange(n_classes), drawers)
    rng = np.random.default_rng(seed)
    out = {}
    for n in (20, 5):
        draws = list(sample_episodes(labels, n, 1, episodes, 1, seed=rng))
        sup = np.stack([s[:, 0] for s, _ in draws]).astype(np.int64)
        qry = np.stack([q[:, 0] for _, q in draws]).astype(np.int64)
        out[n] = (sup, qry, hashlib.sha1(sup.tobytes() + qry.tobytes()).hexdigest()[:16])
    return out


def evaluate_ours(embeddings, labels, data_dir, episodes, episode_seed):
    import numpy as np

    from embedding_net.evaluation.episodes import episode_accuracy
    from embedding_net.evaluation.oneshot import oneshot_accuracy
    from embedding_net.evaluation.retrieval import retrieval_metrics

    t0 = time.perf_counter()
    runs, index = lib.oneshot_embedding_keys(data_dir)
    accuracy, trials = oneshot_accuracy(runs, {k: embeddings[i] for k, i in index.items()})
    res = {"official_oneshot_20way": {"accuracy": round(accuracy, 5), "trials": trials}}
    drawers = int(np.bincount(labels).max())
    hashes = peer_style_episodes(int(labels.max()) + 1, drawers, episodes, episode_seed)
    rng = np.random.default_rng(episode_seed)  # one Generator, 20-way first: the peer's order
    for n in (20, 5):
        r = episode_accuracy(embeddings, labels, n, 1, episodes, 1, seed=rng)
        res[f"episodes_{n}way_1shot"] = {"mean": round(r["mean"], 5), "ci95": round(r["ci95"], 5),
                                         "episodes": r["episodes"], "episodes_sha1_16": hashes[n][2]}
    ret = retrieval_metrics(embeddings, labels)
    res["eval_loo"] = {"precision_at_1": round(ret["precision_at_1"], 5), "r_precision": round(ret["r_precision"], 5),
                       "mean_average_precision_at_r": round(ret["map_at_r"], 5), "n_queries": ret["queries"]}
    res["eval_seconds"] = round(time.perf_counter() - t0, 2)
    return res


def worker_ours(a):
    import embedding_net  # noqa: F401  (before TensorFlow)
    import keras
    import tensorflow as tf

    from embedding_net.inference.encodings import embed_images
    from embedding_net.losses.triplet import TripletLoss
    from embedding_net.models.builders import build_embedding_model
    from embedding_net.mining.monitors import collapse_monitors
    from embedding_net.data.sampling import pk_dataset
    from embedding_net.optim import build_optimizer

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    budget = a.budgets[0]
    keras.utils.set_random_seed(a.seed)
    data = lib.omniglot_inputs(a.size, a.omniglot)
    model = build_embedding_model("conv4", (a.size, a.size, 1), a.embedding)
    model.compile(optimizer=build_optimizer("adam", a.lr), loss=TripletLoss(a.margin, a.mining),
                  metrics=None if a.no_monitors else collapse_monitors(a.margin))
    batch = a.classes_per_batch * a.images_per_class
    train = None
    if budget > 0:
        y = data["y_train"]
        dataset = pk_dataset(y, int(y.max()) + 1, a.classes_per_batch, a.images_per_class,
                             images=data["x_train"], seed=a.seed)
        timer = lib.step_timer(warmup=5, time_budget=budget, noise_from_start=True)
        history = model.fit(dataset, epochs=1, steps_per_epoch=10**9, verbose=0, callbacks=[timer], shuffle=False)
        train = timer.result(batch)
        train.update({"time_budget_s": budget, "images_seen": train["steps"] * batch,
                      "epochs_equivalent": round(train["steps"] * batch / len(y), 2),
                      "loss_last": float(history.history["loss"][-1])})
    t0 = time.perf_counter()
    emb = embed_images(model, data["x_eval"], 256)
    embed_s = time.perf_counter() - t0
    ev = evaluate_ours(emb, data["y_eval"], a.omniglot, a.episodes, a.episode_seed)
    ev["embed_images_per_sec"] = round(len(emb) / embed_s, 1)
    lib.worker_reply({"side": "ours", "train": train, "eval": ev, "jit_compile": bool(model.jit_compile),
                         "monitors": not a.no_monitors, "inputs": data["info"], "versions": lib.ml_versions()})


# --------------------------------------------------------------------------- driver
def ours_cmd(a, budget):
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "ours", "--budgets", str(budget),
           "--mining", a.mining, "--size", str(a.size), "--classes-per-batch", str(a.classes_per_batch),
           "--images-per-class", str(a.images_per_class), "--embedding", str(a.embedding), "--margin", str(a.margin),
           "--lr", str(a.lr), "--episodes", str(a.episodes), "--episode-seed", str(a.episode_seed),
           "--seed", str(a.seed), "--omniglot", a.omniglot]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.no_monitors:
        cmd.append("--no-monitors")
    return cmd


def peer_cmd(a, budget):
    cmd = [a.peer_python, a.peer_script, "--omniglot", lib.omniglot_dir(a.omniglot), "--backbone", "conv4",
           "--size", str(a.size), "--batch", str(a.classes_per_batch * a.images_per_class),
           "--m-per-class", str(a.images_per_class), "--embedding", str(a.embedding), "--loss", "triplet",
           "--miner", lib.PEER_MINER[a.mining], "--margin", str(a.margin), "--lr", str(a.lr),
           "--threads", str(a.threads or os.cpu_count()), "--seed", str(a.seed), "--episodes", str(a.episodes),
           "--episode-seed", str(a.episode_seed), "--no-raw-baseline", "--log-every", "1000000"]
    cmd += ["--time-budget", str(budget)] if budget > 0 else ["--steps", "0"]
    return cmd


def flatten(side, js, noise_threshold):
    """The figures of one run, from our worker's or the peer's JSON (same keys on both)."""
    t, ev = js.get("train") or {}, js.get("eval") or {}
    if side == "ours":
        other = t.get("other_procs_cpu_cores")
        ips = t.get("images_per_sec_median")
    else:
        other = t.get("other_procs_cpu_cores_during_train")
        ips = t.get("images_per_sec_median")
    e20, e5 = ev.get("episodes_20way_1shot") or {}, ev.get("episodes_5way_1shot") or {}
    loo = ev.get("eval_loo") or {}
    rec = {"steps": t.get("steps", 0), "images_per_sec_median": ips, "train_wall_s": t.get("train_wall_seconds"),
           "epochs_equivalent": t.get("epochs_equivalent"), "other_cores": other,
           "official_oneshot": (ev.get("official_oneshot_20way") or {}).get("accuracy"),
           "episodes_20way": e20.get("mean"), "episodes_20way_ci95": e20.get("ci95"),
           "episodes_20way_sha1_16": e20.get("episodes_sha1_16"),
           "episodes_5way": e5.get("mean"), "episodes_5way_ci95": e5.get("ci95"),
           "episodes_5way_sha1_16": e5.get("episodes_sha1_16"),
           "precision_at_1": loo.get("precision_at_1"), "r_precision": loo.get("r_precision"),
           "map_at_r": loo.get("mean_average_precision_at_r")}
    if t:
        rec["valid"], rec["invalid_reason"] = lib.validity(other, noise_threshold)
    else:
        rec["valid"], rec["invalid_reason"] = True, ""  # untrained: nothing timed
    return rec


def main(argv=None):
    a = parse_args(argv)
    if a._worker == "ours":
        return worker_ours(a)
    started = time.perf_counter()
    sides = [a.only] if a.only else ["ours", "peer"]
    have_peer = lib.peer_available(a.peer_python, a.peer_script)
    if "peer" in sides and not have_peer:
        print(f"[bench] peer not found ({a.peer_python}): running ours only", flush=True)
        sides = ["ours"]
    print(f"[bench] accuracy: budgets {a.budgets} s, {a.mining}, {a.episodes} episodes per setting, sides {sides}",
          flush=True)
    inputs = lib.omniglot_inputs(a.size, a.omniglot, a.peer_python if have_peer else None, a.peer_script)["info"]
    log_dir = os.path.join(lib.CACHE, "logs", NAME)
    results, versions = [], {}
    for budget in a.budgets:
        entry = {"budget_s": budget}
        for side in sides:
            cmd = ours_cmd(a, budget) if side == "ours" else peer_cmd(a, budget)
            rc, out, err, wall, other_whole, js = lib.run_subprocess(
                cmd, timeout=a.timeout or int(budget) + 1800,
                log_path=os.path.join(log_dir, f"budget{budget:g}_{side}.log"))
            if rc != 0 or js is None:
                rec = {"error": err.strip().splitlines()[-1] if err.strip() else f"rc {rc}", "valid": False,
                       "invalid_reason": "failed"}
            else:
                rec = flatten(side, js, a.noise_threshold)
                versions.setdefault(side, js.get("versions"))
            rec.update({"rc": rc, "subprocess_wall_s": wall, "other_cores_whole_subprocess": other_whole})
            entry[side] = rec
            print(f"[budget {budget:g} s] {side}: " + (rec.get("error") or
                  f"{rec['steps']} steps, one-shot {lib.fmt(rec['official_oneshot'], 1, True)}, "
                  f"20-way {lib.fmt(rec['episodes_20way'], 1, True)}, 5-way {lib.fmt(rec['episodes_5way'], 1, True)}, "
                  f"MAP@R {lib.fmt(rec['map_at_r'], 3)}, others {rec['other_cores']} cores"
                  + ("" if rec["valid"] else f"  [INVALID: {rec['invalid_reason']}]")), flush=True)
        if len(sides) == 2 and not entry["ours"].get("error") and not entry["peer"].get("error"):
            same = all(entry["ours"][k] == entry["peer"][k] for k in ("episodes_20way_sha1_16", "episodes_5way_sha1_16"))
            entry["identical_episodes"] = same
            if not same:
                print("[bench] WARNING: the episodes differ from the peer's (sha1 mismatch)", flush=True)
        entry["valid"] = all(entry[s]["valid"] for s in sides)
        results.append(entry)

    headers = ["budget", "side", "steps", "images/s", "official one-shot (400)", "20-way episodes",
               "5-way episodes", "P@1", "R-prec", "MAP@R", "other procs (cores)", "valid"]
    rows = []
    for e in results:
        for side in sides:
            r = e[side]
            if r.get("error"):
                rows.append([f"{e['budget_s']:g} s", side, "ERROR: " + r["error"]] + [""] * 9)
                continue
            rows.append([f"{e['budget_s']:g} s", side, lib.fmt(r["steps"]), lib.fmt(r["images_per_sec_median"], 0),
                         lib.fmt(r["official_oneshot"], 1, True),
                         f"{lib.fmt(r['episodes_20way'], 1, True)} ± {lib.fmt(r['episodes_20way_ci95'], 1, True)}",
                         f"{lib.fmt(r['episodes_5way'], 1, True)} ± {lib.fmt(r['episodes_5way_ci95'], 1, True)}",
                         lib.fmt(r["precision_at_1"], 3), lib.fmt(r["r_precision"], 3), lib.fmt(r["map_at_r"], 3),
                         lib.fmt(r["other_cores"], 3), "yes" if r["valid"] else "NO (" + r["invalid_reason"] + ")"])
    lib.print_table("accuracy at equal wall-clock budgets (Omniglot evaluation set)", headers, rows)
    config = {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "output"}
    config.update({"batch": a.classes_per_batch * a.images_per_class, "peer_miner": lib.PEER_MINER[a.mining],
                   "omniglot": lib.omniglot_dir(a.omniglot), "lr_schedule": "constant"})
    lib.finish(NAME, a, {"kind": NAME, "config": config, "inputs": inputs, "versions": versions,
                            "results": results}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
