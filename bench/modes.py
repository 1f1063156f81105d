"""Every shipped Omniglot config after the same short training budget, side by side.

Each config trains for `--epochs` x `--steps` optimizer steps (the batch of every config is
128 images, pairs or triplets), then reports the official 20-way one-shot accuracy (400
trials), the random 20-way / 5-way episodes and MAP@R on the evaluation characters.

    python bench/modes.py --epochs 3 --steps 200 --output bench/results/modes.json

Rows are merged into the output file by config name, each with the commit it ran and the machine,
so a rerun of some configs keeps the others (and the file's `note`). With `--set` they go to its
`sweeps`, named `<config>: <overrides>`:

    python bench/modes.py --configs configs/omniglot_arcface.yml --set loss.proxy_lr_multiplier=10
"""

import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import lib  # noqa: E402
from embedding_net.training import runner as training  # noqa: E402
from embedding_net.atomic import atomic_write_text  # noqa: E402
from embedding_net.config.loading import load_config  # noqa: E402

KEYS = ("oneshot_accuracy", "episodes_20way_1shot", "episodes_20way_1shot_ci95", "episodes_5way_1shot",
        "episodes_5way_1shot_ci95", "map_at_r", "train_seconds")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--work-dir", default="work_dirs/bench_modes")
    parser.add_argument("--data-root", default=None, help="a materialised Omniglot folder (default: the "
                        "configs' shipped dataset, in the cache)")
    parser.add_argument("--configs", nargs="*", default=sorted(glob.glob("configs/omniglot*.yml")))
    parser.add_argument("--output", default="bench/results/modes.json")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="an override applied to every config")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    report = {"epochs": args.epochs, "steps_per_epoch": args.steps, "results": {}}
    if os.path.exists(args.output):
        with open(args.output) as handle:
            report = json.load(handle)
        if (report["epochs"], report["steps_per_epoch"]) != (args.epochs, args.steps):
            sys.exit(f"error: {args.output} holds {report['epochs']} x {report['steps_per_epoch']} steps, "
                     f"not {args.epochs} x {args.steps}: choose another --output")
    results = report.setdefault("sweeps", {}) if args.set else report["results"]
    ran = []
    for path in args.configs:
        name = os.path.basename(path)[:-4] + (f": {' '.join(args.set)}" if args.set else "")
        config = load_config(path, [
            f"train.epochs={args.epochs}", f"train.steps_per_epoch={args.steps}", "train.verbose=0",
            "evaluation.plots=false", f"output.work_dir={args.work_dir}",
            *([f"data.root={args.data_root}"] if args.data_root else []), *args.set])
        started = time.time()
        metrics = training.run(config)
        results[name] = {key: metrics.get(key) for key in KEYS}
        results[name].update(wall_seconds=round(time.time() - started, 1), revision=lib.code_revision(),
                             overrides=args.set, machine=lib.host_info())
        ran.append(name)
        print(name, json.dumps(results[name]), flush=True)
        atomic_write_text(args.output, json.dumps(report, indent=2) + "\n")
    print("\n| config | one-shot (400) | 20-way episodes | 5-way episodes | MAP@R | train s |")
    print("|---|---|---|---|---|---|")
    for name in ran:
        row = results[name]
        print(f"| {name} | {row['oneshot_accuracy']:.1%} | {row['episodes_20way_1shot']:.1%} "
              f"± {row['episodes_20way_1shot_ci95']:.1%} | {row['episodes_5way_1shot']:.1%} "
              f"± {row['episodes_5way_1shot_ci95']:.1%} | {row['map_at_r']:.3f} | {row['train_seconds']} |")

if __name__ == "__main__":
    main()
