"""Sections of BENCHMARKS.md about the losses, by a result's `kind`: parity with
pytorch-metric-learning (`bench/parity.py`), peak memory at large batches (`loss_memory.py`) and
each loss after the same steps as PML's (`losses.py`)."""

from lib import fmt, markdown_table


def _host(data, path):
    host = data.get("machine") or {}
    return f"_{host.get('time_utc', '?')}; {host.get('cpu', '?')}, {host.get('cpu_count', '?')} cores; file `{path}`_"


def parity_section(data, path):
    """Markdown lines: relative differences of value and gradients against PML, per loss."""
    rows = [[name, f"{row['value']:.1e}", f"{row['gradient']:.1e}",
             f"{row['centres_gradient']:.1e}" if "centres_gradient" in row else "-",
             f"{row['pml_float32_value']:.1e}", f"{row['pml_float32_gradient']:.1e}", fmt(row["within_target"])]
            for name, row in data["cases"].items()]
    peer = data.get("peer") or {}
    return ["## Losses: parity with pytorch-metric-learning", "", _host(data, path), "",
            f"`python bench/parity.py`: {data['seeds']} saved batches of {data['batch']} (embedding "
            f"{data['embedding_size']}, {data['num_classes']} class centres), ours in float32 against PML "
            f"{peer.get('pytorch_metric_learning', '?')} in float64, PML's default reducer. Largest relative "
            f"difference over the batches; PML's own float32 is the floor; target {data['target']:g}.", "",
            markdown_table(["loss", "value", "gradient", "centres' gradient", "PML float32: value",
                            "PML float32: gradient", "within target"], rows), ""]


def loss_memory_section(data, path):
    """Markdown lines: peak MiB of every loss and its gradient per batch size."""
    batches = sorted({int(b) for cells in data["losses"].values() for b in cells})

    def cell(reply):
        if "peak_bytes" not in reply:
            return "failed"
        over = "" if reply["peak_bytes"] <= data["goal_bytes"] else " (over)"
        return f"{reply['peak_bytes'] / 2 ** 20:,.0f}{over}"

    rows = [[name] + [cell(cells[str(b)]) if str(b) in cells else "-" for b in batches]
            for name, cells in data["losses"].items()]
    folded = data.get("labels") == "folded"
    title = "## Losses: peak memory at large batches" + (", labels folded modulo the centres" if folded else "")
    return [title, "", _host(data, path), "",
            f"`python bench/loss_memory.py`: the loss and its gradient with respect to random unit embeddings "
            f"(dimension {data['dim']}; {data['centres']} class centres for the proxy losses), "
            + ("every loss on the batch's labels modulo the centres (`--fold-all`: at 8,192, 48 classes have 12 "
               "images, so anchors have up to 11 positives), " if folded else
               "P x K labels (K = 4) for the pair losses, " if data.get("labels") == "p_by_k" else "")
            + "MiB above the inputs, "
            f"the largest of {data.get('repeats', 1)} processes; goal: within {data['goal_bytes'] / 2 ** 30:g} GiB.",
            "", markdown_table(["loss"] + [f"B = {b:,}" for b in batches], rows), ""]


def losses_section(data, path):
    """Markdown lines: ours against PML's same loss after the same steps on Omniglot."""
    def cells(side):
        if not side or "error" in side:
            return ["-"] * 3
        return [fmt(side["official_oneshot"], 1, True), fmt(side["episodes_20way"], 1, True), fmt(side["map_at_r"], 3)]

    rows = [[name, fmt(entry["steps"]), *cells(entry.get("ours")), (entry.get("ours") or {}).get("revision") or "-",
             *cells(entry.get("peer"))] for name, entry in data["rows"].items()]
    first = next(iter(data["rows"].values()), {})
    return ["## Losses: ours against PML's same loss after the same steps", "", _host(first, path), "",
            "`python bench/losses.py`: our shipped `configs/omniglot_<loss>.yml` against "
            "`../shared/bench/peer_pml.py` with the same PML loss and settings (conv4 28 px, embedding 128, batch "
            "32 x 4, Adam 1e-3); official 20-way one-shot (400 trials), 1,000 random 20-way episodes, MAP@R. "
            "`ours' code`: the commit our side ran; \"-\" marks rows measured before it was recorded (before "
            "83bb5b8: Keras' glorot initialisation, dark ink on white).", "",
            markdown_table(["loss", "steps", "ours: official", "20-way", "MAP@R", "ours' code", "PML: official",
                            "20-way", "MAP@R"],
                           rows), ""]


SECTIONS = {"parity": parity_section, "loss_memory": loss_memory_section, "losses": losses_section}
