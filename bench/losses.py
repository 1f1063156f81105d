"""Each loss after the same number of steps: our shipped config against pytorch-metric-learning's
same loss, on Omniglot (conv4 28 px, embedding 128, batches of 128 = 32 x 4, Adam 1e-3).

Ours trains `configs/omniglot_<loss>.yml` (`omniglot.yml` for the triplet loss) as shipped but
for `--steps` steps, and evaluates it as `train.py` does. The peer trains with
`../shared/bench/peer_pml.py`, its triplet loss replaced by the same PML loss with the same
settings (`bench/lib/peer_losses.py`), for the same steps, and evaluates with the same protocol:
the official 20-way one-shot task (400 trials), random 20-way and 5-way episodes, MAP@R over the
evaluation characters. What differs is each library's own way to train, as its users get it:
our configs' cosine schedule and (for the pair losses) rotated characters as extra classes; the
peer's constant learning rate on the 964 characters. Results are merged into the output file
after every run, so a long sweep can be split over several invocations.

    python bench/losses.py --losses supcon multi_similarity --steps 3000
    python bench/losses.py --losses supcon --only ours --set loss.temperature=0.05 --tag t0.05
"""

import argparse
import json
import os
import sys
import tempfile
import time

import lib
from embedding_net.config.loading import load_config  # no TensorFlow: the driver stays light

NAME = "losses"
PEER_LOSSES = ("multi_similarity", "supcon", "circle", "proxy_anchor", "cosface", "arcface")


def config_path(loss):
    """Our shipped config of `loss`."""
    return os.path.join(lib.REPO, "configs", "omniglot.yml" if loss == "triplet" else f"omniglot_{loss}.yml")


def ours(loss, steps, overrides, work_dir):
    from embedding_net.training import runner

    path = config_path(loss)
    per_epoch = load_config(path).train.steps_per_epoch
    if steps % per_epoch:
        sys.exit(f"error: --steps must be a multiple of the config's train.steps_per_epoch ({per_epoch})")
    config = load_config(path, [f"train.epochs={steps // per_epoch}", "train.verbose=0", "evaluation.plots=false",
                                f"output.work_dir={work_dir}", f"output.name={loss}", *overrides])
    metrics = runner.run(config)
    return {"official_oneshot": metrics["oneshot_accuracy"], "episodes_20way": metrics["episodes_20way_1shot"],
            "episodes_5way": metrics["episodes_5way_1shot"], "map_at_r": metrics["map_at_r"],
            "train_seconds": metrics["train_seconds"]}


def peer(loss, steps, peer_python, omniglot):
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "peer.json")
        common = ["--omniglot", omniglot, "--steps", str(steps), "--embedding", "128", "--json-out", out]
        if loss == "triplet":  # peer_pml.py's own loss, semi-hard triplets, at our config's margin
            margin = load_config(config_path("triplet")).loss.margin
            command = [peer_python, lib.DEFAULT_PEER_SCRIPT, *common, "--margin", str(margin)]
        else:
            command = [peer_python, os.path.join(lib.BENCH, "lib", "peer_losses.py"), "--loss", loss, "--", *common]
        rc, stdout, stderr, wall, _, _ = lib.run_subprocess(command, timeout=6 * 3600)
        if rc != 0 or not os.path.exists(out):
            return {"error": (stderr or stdout).strip().splitlines()[-1:]}
        with open(out) as handle:
            result = json.load(handle)
    evaluation, train = result["eval"], result["train"]
    return {"official_oneshot": evaluation["official_oneshot_20way"]["accuracy"],
            "episodes_20way": evaluation["episodes_20way_1shot"]["mean"],
            "episodes_5way": evaluation["episodes_5way_1shot"]["mean"],
            "map_at_r": evaluation["eval_loo"]["mean_average_precision_at_r"],
            "train_seconds": train["train_wall_seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", choices=("triplet",) + PEER_LOSSES, default=list(PEER_LOSSES))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--only", choices=("ours", "peer"))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an override of our configs (a sweep); the peer keeps PML's settings")
    parser.add_argument("--tag", default="", help="names the row of a sweep, e.g. t0.05")
    parser.add_argument("--peer-python", default=lib.DEFAULT_PEER_PYTHON)
    parser.add_argument("--omniglot", default=lib.DEFAULT_OMNIGLOT)
    parser.add_argument("--work-dir", default="work_dirs/bench_losses")
    parser.add_argument("--output", default=lib.default_output(NAME))
    args = parser.parse_args()
    if args.set and args.only != "ours":
        sys.exit("error: --set changes our side only: add --only ours")
    result = {"kind": NAME, "rows": {}}
    if os.path.exists(args.output):
        with open(args.output) as handle:
            result = json.load(handle)
        result["kind"] = NAME
    for loss in args.losses:
        row = f"{loss} {args.tag}".strip()
        entry = result["rows"].setdefault(row, {"loss": loss, "steps": args.steps, "overrides": args.set})
        started = time.time()
        if args.only in (None, "ours"):
            entry["ours"] = {**ours(loss, args.steps, args.set, args.work_dir), "revision": lib.code_revision()}
        if args.only in (None, "peer"):
            entry["peer"] = peer(loss, args.steps, args.peer_python, args.omniglot)
        entry["machine"] = lib.host_info()
        print(row, json.dumps(entry), f"({time.time() - started:.0f} s)", flush=True)
        lib.atomic_write_json(args.output, result)

    def cells(side):
        if not side or "error" in side:
            return ["-"] * 3 if not side else ["failed"] * 3
        return [lib.fmt(side["official_oneshot"], 1, True), lib.fmt(side["episodes_20way"], 1, True),
                lib.fmt(side["map_at_r"], 3)]

    lib.print_table(f"Omniglot after the same steps, ours against PML's same loss",
                    ["loss", "steps", "ours: official", "20-way", "MAP@R", "PML: official", "20-way", "MAP@R"],
                    [[row, entry["steps"], *cells(entry.get("ours")), *cells(entry.get("peer"))]
                     for row, entry in result["rows"].items()])
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
