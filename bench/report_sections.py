"""The search section of BENCHMARKS.md, from `bench/results/search.json` (`bench/search.py`)."""

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
