"""Training curves: the loss and the collapse monitors of `history.csv`, epoch by epoch, drawn
on a `matplotlib.figure.Figure` (imported inside the function, so importing this is cheap)."""

import csv

import numpy as np

from embedding_net.viz.galleries import save_figure

_CURVES = ("loss", "learning_rate", "positive_distance", "negative_distance", "active_triplets")


def _read_history(source):
    """{column: float array} from a CSVLogger file or a `History.history`-style dict."""
    if isinstance(source, dict):
        return {str(k): np.asarray(v, np.float64).ravel() for k, v in source.items()}

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):  # CSVLogger writes "NA" for a metric missing that epoch
            return np.nan

    with open(source, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns = rows[0].keys() if rows else []
    return {column: np.array([number(row.get(column)) for row in rows]) for column in columns}


def plot_training_curves(history_csv_or_dict, path="curves.png"):
    """One panel per logged series, with its `val_` twin: loss, learning rate, triplet statistics.

    Only the columns present are drawn (`lr` counts as the learning rate). Epochs are shown
    from 1; CSVLogger's `epoch` column is 0-based.

    Args:
        history_csv_or_dict: the `history.csv` of a run (keras CSVLogger) or `History.history`.
        path: PNG to write.

    Returns:
        `path`.

    Raises:
        ValueError: none of the known series has a finite value.
    """
    from matplotlib.figure import Figure

    history = _read_history(history_csv_or_dict)
    if "learning_rate" not in history and "lr" in history:
        history["learning_rate"] = history["lr"]
    panels = [(base, [n for n in (base, "val_" + base) if n in history and np.isfinite(history[n]).any()])
              for base in _CURVES]
    panels = [(base, names) for base, names in panels if names]
    if not panels:
        source = history_csv_or_dict if not isinstance(history_csv_or_dict, dict) else "the history"
        raise ValueError(f"{source} has no values for any of {', '.join(_CURVES)}. "
                         f"Received columns: {sorted(history) or 'none'}")
    columns = 1 if len(panels) == 1 else 2
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(5.5 * columns, 3.2 * rows), layout="constrained")
    for i, (base, names) in enumerate(panels):
        axes = figure.add_subplot(rows, columns, i + 1)
        for name in names:
            values = history[name]
            epochs = np.arange(1, len(values) + 1)
            if len(history.get("epoch", [])) == len(values):
                epochs = history["epoch"] + 1
            axes.plot(epochs, values, marker="o" if len(values) <= 30 else None, markersize=3, label=name)
        finite = np.concatenate([history[n][np.isfinite(history[n])] for n in names])
        if base == "learning_rate" and finite.min() > 0 and finite.max() / finite.min() > 50:
            axes.set_yscale("log")  # schedules span decades: linear would flatten the tail
        axes.set_title(base.replace("_", " "))
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        if len(names) > 1:
            axes.legend(fontsize=8)
    return save_figure(figure, path)
