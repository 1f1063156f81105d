"""Sections of BENCHMARKS.md about a user's own folder, by a result's `kind`: `train.py --data`
against hand-written configs (`bench/folder_data.py`) and TensorBoard's cost
(`bench/tensorboard_overhead.py`)."""

from lib import fmt, markdown_table


def _host(host, path):
    return f"_{host.get('time_utc', '?')}; {host.get('cpu', '?')}, {host.get('cpu_count', '?')} cores; file `{path}`_"


def folder_data_section(data, path):
    """Markdown lines: per folder set, `--data` alone against each hand-written config."""
    rows = []
    for name, result in data["results"].items():
        for run, metrics in result["runs"].items():
            label = "`--data` alone" if run == "data_auto" else run + (" (best)" if run == result["best_hand"] else "")
            rows.append([name, label, fmt(metrics["top1_accuracy"], 1, percent=True), fmt(metrics["map_at_r"], 3),
                         fmt(metrics["train_seconds"], 0)])
    gaps = ", ".join(f"{name} {result['gap_points']:+.1f}" for name, result in data["results"].items())
    return ["## Your own folder: `--data DIR` against hand-written configs", "", _host(data["host"], path), "",
            f"`python bench/folder_data.py`: {data['epochs']} x {data['steps_per_epoch']} steps each, val top-1 "
            f"(queries against the train images) and MAP@R. Best hand-written minus `--data`, points: {gaps}.", "",
            markdown_table(["folder", "config", "top-1", "MAP@R", "train s"], rows), ""]


def tensorboard_section(data, path):
    """Markdown lines: training time with and without the TensorBoard callback."""
    summary = data["summary"]
    return ["## TensorBoard's cost", "", _host(data["host"], path), "",
            f"`{data.get('command', 'python bench/tensorboard_overhead.py')}`: {data['epochs']} x "
            f"{data['steps_per_epoch']} steps, alternating pairs. Time inside the callback: "
            f"{summary['callback_share_percent']:.2f}% of training; fit {summary['fit_seconds_off']:.1f} s off, "
            f"{summary['fit_seconds_on']:.1f} s on (ratio {summary['ratio']:.3f}, pairs "
            f"{', '.join(f'{r:.2f}' for r in summary['pair_ratios'])}; up to {summary['max_other_cores']:.1f} "
            "cores busy with other work, so the ratio is noise-bound). Final scalars and projector: "
            f"{summary['after_training_seconds']:.2f} s.", ""]


SECTIONS = {"folder_data": folder_data_section, "tensorboard_overhead": tensorboard_section}
