"""What TensorBoard costs a training run (issue #18): configs/omniglot.yml (conv4, 28 px, P x K =
32 x 4, semi-hard triplets) for 3 epochs of 50 steps (+ 5 validation steps), with and without the
TensorBoard outputs, in alternating pairs of runs on an Omniglot subset.

    python bench/tensorboard_overhead.py              # 3 pairs, about 5 minutes on 2 busy cores
    python bench/tensorboard_overhead.py --quick      # a smoke run: 1 pair of 1 x 5 steps

Each run is `embedding_net.training.run` in its own process, as train.py runs it. Reported:
- `fit_seconds`: the wall time of the runner's `_fit` (the epochs, validation and callbacks);
  overhead = median(on) / median(off) - 1. Other processes on the machine move it by a few %:
  their CPU (`other_cores`) is recorded with every run.
- `callback_seconds`: the time spent inside the TensorBoard callback's hooks of the run, a
  measure of its own cost that the machine's noise hardly touches; `callback_share` = it / fit.
- `after_training_seconds`: the final scalars and the projector (the sprite of the val images).
Writes bench/results/tensorboard.json.
"""

import argparse
import functools
import os
import statistics
import sys
import time

import lib

NAME = "tensorboard"
BACKGROUND = ("Latin", "Greek", "Cyrillic", "Korean", "Hebrew", "Armenian")  # 170 characters
EVALUATION = ("Atlantean", "Glagolitic", "Gurmukhi", "Kannada", "Malayalam")  # 204 characters
HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin",
         "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end")


def _timed_hooks(callback, clock):
    """`callback` with every hook's time added to `clock[0]`."""
    for hook in HOOKS:
        method = getattr(callback, hook)

        @functools.wraps(method)
        def timed(*args, _method=method, **kwargs):
            started = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                clock[0] += time.perf_counter() - started

        setattr(callback, hook, timed)
    return callback


def worker(a):
    import embedding_net  # noqa: F401  (before TensorFlow: sets TF_ENABLE_ONEDNN_OPTS)
    from embedding_net.config.loading import load_config
    from embedding_net.training import runner, tensorboard

    # Until the config has `output.tensorboard`, the switch is this module function.
    tensorboard.tensorboard_enabled = lambda config: a.mode == "on"
    clock, seconds = [0.0], {}

    def timing(name, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] = time.perf_counter() - started
        return timed

    make_callbacks = runner.tensorboard_callbacks
    runner.tensorboard_callbacks = lambda *args: [_timed_hooks(c, clock) for c in make_callbacks(*args)]
    runner._fit = timing("fit", runner._fit)
    runner.write_run_tensorboard = timing("after_training", runner.write_run_tensorboard)
    config = load_config(os.path.join(lib.REPO, "configs", "omniglot.yml"), [
        f"data.root={a.data_root}", f"train.epochs={a.epochs}", f"train.steps_per_epoch={a.steps}",
        f"train.validation_steps={a.validation_steps}", "train.verbose=0", "evaluation.plots=false",
        "train.export_litert=false", "evaluation.episodes=100", f"output.work_dir={a.work_dir}", f"output.name=run_{a.mode}",
        f"train.seed={a.seed}"])
    started = time.perf_counter()
    runner.run(config)
    lib.worker_reply({"mode": a.mode, "fit_seconds": round(seconds["fit"], 3),
                      "callback_seconds": round(clock[0], 4),
                      "after_training_seconds": round(seconds.get("after_training", 0.0), 3),
                      "run_seconds": round(time.perf_counter() - started, 1), "versions": lib.ml_versions()})


def _data_root(work_dir):
    from embedding_net.data.datasets.omniglot import materialize_omniglot

    return materialize_omniglot(os.path.join(work_dir, "omniglot_subset"), alphabets=set(BACKGROUND + EVALUATION))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3, help="runs with and without TensorBoard, alternating")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50, help="steps per epoch")
    ap.add_argument("--validation-steps", type=int, default=5)
    ap.add_argument("--work-dir", default=os.path.join(lib.REPO, "work_dirs", "bench_tensorboard"))
    ap.add_argument("--seed", type=int, default=0)
    for hidden in ("--mode", "--data-root"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a._worker:
        return worker(a)
    if a.quick:
        a.pairs, a.epochs, a.steps, a.validation_steps = 1, 1, 5, 2
    started, runs = time.perf_counter(), []
    data_root = _data_root(a.work_dir)
    for pair in range(a.pairs):
        # Alternate which side runs first, so a drift of the machine favours neither.
        for mode in ("off", "on") if pair % 2 == 0 else ("on", "off"):
            cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "1", "--mode", mode,
                   "--data-root", data_root, "--work-dir", a.work_dir, "--epochs", str(a.epochs),
                   "--steps", str(a.steps), "--validation-steps", str(a.validation_steps), "--seed", str(a.seed)]
            rc, _, err, wall, other, reply = lib.run_subprocess(cmd, timeout=900)
            if rc or not reply:
                raise SystemExit(f"[tensorboard] run {mode} failed: {err[-2000:]}")
            reply.update({"pair": pair, "wall_s": wall, "other_cores": other})
            runs.append(reply)
            print(f"[tensorboard] pair {pair} {mode}: fit {reply['fit_seconds']:.2f} s, callback "
                  f"{reply['callback_seconds']:.3f} s, after training {reply['after_training_seconds']:.2f} s "
                  f"(others used {other} cores)", flush=True)
    fit = {mode: statistics.median(r["fit_seconds"] for r in runs if r["mode"] == mode) for mode in ("off", "on")}
    on = [r for r in runs if r["mode"] == "on"]
    summary = {
        "fit_seconds_off": fit["off"], "fit_seconds_on": fit["on"], "ratio": round(fit["on"] / fit["off"], 4),
        "overhead_percent": round(100 * (fit["on"] / fit["off"] - 1), 2),
        "pair_ratios": [round(next(r["fit_seconds"] for r in runs if r["pair"] == p and r["mode"] == "on")
                              / next(r["fit_seconds"] for r in runs if r["pair"] == p and r["mode"] == "off"), 4)
                        for p in range(a.pairs)],
        "callback_share_percent": round(100 * statistics.median(r["callback_seconds"] / r["fit_seconds"] for r in on), 3),
        "after_training_seconds": statistics.median(r["after_training_seconds"] for r in on),
        "max_other_cores": max((r["other_cores"] or 0.0) for r in runs),
    }
    lib.print_table("TensorBoard on / off (median over pairs)", ["fit off s", "fit on s", "on / off",
                    "inside the callback", "after training s", "others' cores (max)"],
                    [[lib.fmt(fit["off"], 2), lib.fmt(fit["on"], 2), lib.fmt(summary["ratio"], 3),
                      f"{summary['callback_share_percent']:.2f}% of fit", lib.fmt(summary["after_training_seconds"], 2),
                      lib.fmt(summary["max_other_cores"], 2)]])
    lib.finish(NAME, a, {"kind": "tensorboard_overhead", "config": "configs/omniglot.yml", "epochs": a.epochs,
                         "steps_per_epoch": a.steps,
                         "validation_steps": a.validation_steps, "alphabets": {"train": BACKGROUND, "val": EVALUATION},
                         "summary": summary, "runs": runs}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
