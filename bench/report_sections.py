"""Sections of BENCHMARKS.md rendered from one result each: search (`bench/search.py`,
`search_classes.py`), and `SECTIONS`, by a result's `kind`: bfloat16 (`precision.py`), the
backbones against the peer (`backbones.py`) and the convolution gradient (`convolution.py`)."""

from lib import fmt, markdown_table


def is_search_result(data):
    """The name of a search benchmark's result (`search`, `search_classes`), else None."""
    if isinstance(data, dict) and data.get("name") in ("search", "search_classes") and isinstance(
            data.get("results"), list):
        return data["name"]
    return None


def search_classes_section(data, path):
    """Markdown lines: class answers of each backend against exact search, on real embeddings."""
    machine = data.get("machine") or {}
    rows = [[r["backend"], fmt(r["build_s"], 2), fmt(r["prediction_agreement"], 4), fmt(r["top5_agreement"], 4),
             fmt(r["knn5_vote_agreement"], 4)] for r in data["results"]]
    return ["### Class answers on real embeddings", "",
            f"_`{data.get('command')}`; {machine.get('time_utc', '?')}; {machine.get('cpu', '?')}; file `{path}`_", "",
            f"{data['results'][0]['queries']:,} held-out images as queries against a gallery of {data['gallery']:,} "
            f"({data['classes']:,} classes, `{data['distance']}`): the share of queries whose answer equals exact "
            "search's.", "",
            markdown_table(["backend", "build s", "predicted class", "top-5 class list", "5-NN vote"], rows), ""]


def search_section(data, path):
    """Markdown lines: the machine, the command, one row per size and backend, and the targets."""
    machine = data.get("machine") or {}
    lines = ["## Search: exact and approximate backends of `embedding_net.index`", "",
             f"_`{data.get('command')}`; {machine.get('time_utc', '?')}; {machine.get('cpu', '?')}, "
             f"{machine.get('cpu_count', '?')} cores; faiss {machine.get('faiss')}, usearch {machine.get('usearch')}; "
             f"file `{path}`_", "",
             "Random unit vectors of dimension 128 with class structure; queries are perturbed gallery vectors. "
             "`rss_ratio`: peak resident memory of building and searching over the raw vectors' bytes (meaningful "
             "at 1,000,000, where the vectors dominate). Recall against exact search. Yardsticks are raw faiss "
             "indexes run in the same process. `other_cores`: CPU other processes used meanwhile.", ""]
    rows = [[f"{r['size']:,}", r["backend"] + (" (yardstick)" if r.get("yardstick") else ""), fmt(r.get("build_s"), 2),
             fmt(r.get("rss_ratio"), 2), fmt(r.get("p50_ms"), 2), fmt(r.get("p99_ms"), 2),
             fmt(r.get("batched_ms_per_query"), 2), fmt(r.get("recall_at_1"), 3), fmt(r.get("recall_at_10"), 3),
             fmt(r.get("other_cores"), 2)] for r in data["results"]]
    lines += [markdown_table(["size", "backend", "build s", "rss ratio", "p50 ms", "p99 ms", "batched ms/query",
                              "recall@1", "recall@10", "other cores"], rows), ""]
    targets = data.get("targets") or {}
    checks = targets.get("checks") or {}
    if checks:
        lines += [f"Targets at {targets.get('size', '?'):,} vectors (default approximate backend: "
                  f"`{targets.get('default_backend', '?')}`):", "",
                  markdown_table(["check", "measured"], [[key, fmt(value, 3)] for key, value in checks.items()]), ""]
    return lines


def precision_section(data, path):
    """Markdown lines: float32 against bfloat16 training throughput per network (`bench/precision.py`)."""
    host = data.get("host") or {}
    rows = [[s["network"], fmt(s["float32_images_per_s"]), fmt(s["bfloat16_images_per_s"]),
             fmt(s["bfloat16_over_float32"], 2)] for s in data["summary"]]
    flags = ", ".join(data.get("cpu_bf16_flags") or []) or "none"
    return ["## bfloat16 against float32", "",
            f"_`{data.get('command')}`; {host.get('time_utc', '?')}; {host.get('cpu', '?')} (bfloat16 instructions: "
            f"{flags}); file `{path}`_", "",
            "Ours only, each measurement in its own process, alternating precisions; median images/s of the median "
            "step over the rounds.", "",
            markdown_table(["network", "float32 images/s", "bfloat16 images/s", "bfloat16 / float32"], rows), ""]


def _source(data, path):
    host = data.get("host") or {}
    flags = ", ".join(data["cpu_bf16_flags"]) or "none" if "cpu_bf16_flags" in data else "not recorded"
    quick = "**SMOKE RUN (`--quick`): not a measurement**; " if data.get("quick") else ""
    return (f"_{quick}`{data.get('command')}`; {host.get('time_utc', '?')}; {host.get('cpu', '?')}, "
            f"{host.get('cpu_count', '?')} cores (bfloat16 instructions: {flags}); file `{path}`_")


def backbones_section(data, path):
    """Markdown lines: training and embedding images/s of ours (float32, bfloat16) and the peer."""
    sides = ("ours_float32", "ours_bfloat16", "peer")
    rows = [[s["network"]] + [fmt(s[f"{side}_images_per_s"]) for side in sides]
            + [fmt(s["ours_float32_over_peer"], 2), fmt(s["ours_bfloat16_over_peer"], 2)]
            + [fmt(s[f"{side}_embed_images_per_s"]) for side in sides] + [fmt(s["embed_best_ours_over_peer"], 2)]
            for s in data["summary"]]
    rounds = max((r["round"] for r in data["runs"]), default=-1) + 1
    return [f"## Backbones photo users train: ours against the peer ({path.rsplit('/', 1)[-1]})", "",
            _source(data, path), "",
            f"{rounds} rounds of ours float32, ours bfloat16, peer float32 (PyTorch), each in its own process, on "
            "random uint8 images of P x K labels; semi-hard triplets, Adam. Training: median images/s over valid "
            "runs, and the median over rounds of ours / peer. Embedding: batch 256, ours `embed_images`, the "
            "peer's `model.eval()` forward under `torch.no_grad()`.", "",
            markdown_table(["network", "ours float32", "ours bfloat16", "peer", "float32 / peer", "bfloat16 / peer",
                            "embed: ours float32", "embed: ours bfloat16", "embed: peer", "embed: best ours / peer"],
                           rows), ""]


def convolution_section(data, path):
    """Markdown lines: one convolution's training cost with oneDNN's and the matrix-product kernel gradient."""
    rows = [[r["dtype"], f"{r['side']}x{r['side']}x{r['channels_in']} -> {r['channels_out']}", r["output_cells"],
             fmt(r["keras_ms"], 2), fmt(r["matmul_gradient_ms"], 2), fmt(r["keras_over_matmul"], 2)]
            for r in data["records"]]
    return ["## The kernel gradient of small feature maps", "", _source(data, path), "",
            "One 3x3 convolution (forward and both gradients, batch "
            f"{data['records'][0]['batch'] if data['records'] else '?'}): Keras' `Conv2D` (oneDNN's kernel gradient) "
            "against `embedding_net.models.convolution.Conv2D` with the matrix-product kernel gradient; its "
            "`MATMUL_GRADIENT_MAX_CELLS` follows the crossover.", "",
            markdown_table(["dtype", "input -> channels", "output cells", "oneDNN ms", "matmul ms", "speed-up"], rows),
            ""]


def profile_section(data, path):
    """Markdown lines: one training step's core time by op kind (`bench/profile_step.py`)."""
    profiles = data["profiles"]
    kinds = list(dict.fromkeys(kind for p in profiles for kind in p["core_ms_per_step"]))
    rows = [[kind] + [f"{fmt(p['core_ms_per_step'].get(kind, 0.0))} "
                      f"({p['core_ms_per_step'].get(kind, 0.0) / (p['step_ms'] * p['cores']):.0%})" for p in profiles]
            for kind in kinds] + [["step wall time (ms)"] + [fmt(p["step_ms"]) for p in profiles]]
    return [f"## Where a {data['network']} training step goes", "", _source(data, path), "",
            "TensorFlow's profiler over a few `model.fit` steps: core-milliseconds per step by op kind, and their share "
            "of wall time x cores. 'Unaccounted' is what no op covers: the executor's scheduling, Python and Keras "
            "between steps, and cores left idle while an op runs on one thread.", "",
            markdown_table(["op kind"] + [p["precision"] for p in profiles], rows), ""]


SECTIONS = {"backbones": backbones_section, "convolution": convolution_section, "precision": precision_section,
            "profile_step": profile_section}
