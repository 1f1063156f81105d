"""Renders BENCHMARKS.md from bench/results/*.json, so that no number is ever copied by hand.

    python bench/report.py                      # writes BENCHMARKS.md at the repository root
    python bench/report.py --output -           # prints it instead

Needs only the standard library (no TensorFlow). Results of `--quick` runs are rendered under
a banner saying they are smoke runs, not measurements.
"""

import argparse
import glob
import json
import os
import sys

import lib
from lib import fmt, markdown_table
from report_folders import SECTIONS as FOLDER_SECTIONS
from report_losses import SECTIONS as LOSS_SECTIONS
from report_sections import SECTIONS as OTHER_SECTIONS, is_search_result, search_classes_section, search_section

SECTIONS = {**OTHER_SECTIONS, **LOSS_SECTIONS, **FOLDER_SECTIONS}

COMMANDS = [
    ("throughput", "python bench/throughput.py", "28 px, semi-hard, 5 ours/peer pairs"),
    ("throughput_s56", "python bench/throughput.py --size 56", "56 px input"),
    ("throughput_hard", "python bench/throughput.py --mining hard", "batch-hard (peer: PML 'hard')"),
    ("throughput_all", "python bench/throughput.py --mining all", "batch-all (peer: PML 'all')"),
    ("accuracy", "python bench/accuracy.py --budgets 120 600", "equal training budgets, then evaluation"),
    ("mining", "python bench/mining.py", "batch 64 / 256 / 1024 x all / hard / semi_hard"),
    ("pipeline", "python bench/pipeline.py", "pipeline delivery vs training consumption"),
    ("inference", "python bench/inference.py", "embedding, test.py cold start, search"),
    ("precision", "python bench/precision.py", "float32 vs bfloat16: conv4@28, ResNet18@64, ResNet50@224"),
    ("backbones", "python bench/backbones.py", "ours fp32/bf16 vs peer: conv4, ResNet18@64/112, ResNet50"),
    ("convolution", "python bench/convolution.py", "the kernel gradient of small maps, per layer shape"),
    ("profile_step", "python bench/profile_step.py", "one ResNet18 step's core time by op kind"),
    ("search", "python bench/search.py --sizes 10000 100000 1000000", "index backends at up to 1M vectors"),
]


KINDS = ("throughput", "accuracy", "mining", "pipeline", "inference")


def load(results_dir):
    """{name: result} of the JSON files written by this folder's benchmarks, and the other files."""
    out, other = {}, []
    for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as error:
            print(f"[report] skipping {path}: {error}", file=sys.stderr)
            continue
        name = os.path.relpath(path, lib.REPO)
        if is_search_result(data):
            data["_file"] = name
            out[is_search_result(data)] = data
            continue
        if not isinstance(data, dict) or data.get("kind") not in KINDS + tuple(SECTIONS):
            other.append(name)  # e.g. another script's results in the same folder
            continue
        data["_file"] = name
        stem = os.path.splitext(os.path.basename(path))[0]
        out[stem if data["kind"] in SECTIONS else data.get("benchmark") or stem] = data
    return out, other


def provenance(d):
    kind = "**SMOKE RUN (`--quick`): not a measurement**" if d.get("quick") else "full run"
    host = d.get("host") or {}
    return (f"_{kind}; `{d.get('command')}`; {host.get('time_utc', '?')}; {d.get('wall_seconds', '?')} s; "
            f"file `{d['_file']}`_")


def yes(v):
    return "yes" if v else "**NO**"


# --------------------------------------------------------------------------- sections
def throughput_section(d):
    c = d["config"]
    s = d["summary"]
    lines = [f"### conv4 {c['size']} px, batch {c['batch']} ({c['classes_per_batch']} x {c['images_per_class']}), "
             f"triplet `{c['mining']}` (peer miner `{c['peer_miner']}`), embedding {c['embedding']}", "",
             provenance(d), ""]
    two = "peer_valid_runs" in s and "ours_valid_runs" in s
    if two:
        ratio = (f"**{fmt(s.get('ratio_median_valid_pairs'), 3)}** "
                 f"(range {fmt(s.get('ratio_min_valid_pairs'), 3)}-{fmt(s.get('ratio_max_valid_pairs'), 3)})"
                 if s.get("valid_pairs") else "not reported: no valid pair")
        lines += [markdown_table(
            ["", "ours (embedding_net, model.fit)", "peer (PML, PyTorch)", "ours / peer"],
            [["images/s, median of valid runs", fmt(s.get("ours_images_per_sec_median_valid")),
              fmt(s.get("peer_images_per_sec_median_valid")), ratio],
             ["images/s, median of all runs (incl. invalid)", fmt(s.get("ours_images_per_sec_median_all")),
              fmt(s.get("peer_images_per_sec_median_all")), ""],
             ["valid pairs", "", "", f"{s.get('valid_pairs')} of {s.get('pairs')}"]]), ""]
    rows = []
    for p in d["pairs"]:
        o, q = p.get("ours", {}), p.get("peer", {})
        rows.append([p["round"], fmt(o.get("images_per_sec_median")), fmt(o.get("median_ms")),
                     fmt(q.get("images_per_sec_median")), fmt(q.get("median_ms")),
                     fmt(p.get("ratio_ours_over_peer"), 3), fmt(o.get("other_cores"), 3), fmt(q.get("other_cores"), 3),
                     yes(p.get("valid")) + (f" ({p['invalid_reason']})" if not p.get("valid") and p.get("invalid_reason")
                                           else "")])
    lines += [markdown_table(["round", "ours img/s", "ours step ms", "peer img/s", "peer step ms", "ours/peer",
                              "other procs during ours (cores)", "during peer (cores)", "valid"], rows), ""]
    inp = d.get("inputs") or {}
    lines += [f"Inputs: {inp.get('source')} (max quantisation error {inp.get('max_quantisation_error')}). "
              f"Steps per run: {c['steps']} ({c['warmup']} warm-up); ours with"
              f"{'out' if c.get('no_monitors') else ''} train.py's collapse monitors.", ""]
    return lines


def accuracy_section(d):
    c = d["config"]
    lines = [provenance(d), ""]
    rows = []
    for e in d["results"]:
        for side in ("ours", "peer"):
            r = e.get(side)
            if r is None:
                continue
            if r.get("error"):
                rows.append([f"{e['budget_s']:g} s", side, "ERROR: " + r["error"]] + [""] * 8)
                continue
            rows.append([f"{e['budget_s']:g} s", side, fmt(r.get("steps")), fmt(r.get("official_oneshot"), 1, True),
                         f"{fmt(r.get('episodes_20way'), 1, True)} ± {fmt(r.get('episodes_20way_ci95'), 1, True)}",
                         f"{fmt(r.get('episodes_5way'), 1, True)} ± {fmt(r.get('episodes_5way_ci95'), 1, True)}",
                         fmt(r.get("precision_at_1"), 3), fmt(r.get("r_precision"), 3), fmt(r.get("map_at_r"), 3),
                         fmt(r.get("other_cores"), 3), yes(r.get("valid"))])
    lines += [markdown_table(["budget", "side", "steps", "official 20-way one-shot (400 trials)",
                              "20-way 1-shot episodes (95%)", "5-way 1-shot episodes (95%)", "P@1", "R-precision",
                              "MAP@R", "other procs (cores)", "valid"], rows), ""]
    same = [e.get("identical_episodes") for e in d["results"] if "identical_episodes" in e]
    lines += [f"Conv4 28 px, embedding {c['embedding']}, batch {c['batch']}, triplet `{c['mining']}` margin "
              f"{c['margin']}, Adam {c['lr']} constant; {c['episodes']} episodes per setting (seed "
              f"{c['episode_seed']}); identical episodes on both sides (sha1): "
              f"{'yes' if same and all(same) else ('NO' if same else 'not checked')}.", ""]
    return lines


def mining_section(d):
    rows = []
    for r in d["results"]:
        if r.get("skipped") or r.get("error"):
            rows.append([r["batch"], r["mining"], r.get("skipped") or "ERROR: " + r["error"]] + [""] * 6)
            continue
        rows.append([r["batch"], r["mining"], fmt(r["step_null_ms"]), fmt(r["step_mined_ms"]),
                     fmt(r["loss_and_mining_ms"]), fmt(r["share_of_step"], 1, True), fmt(r["isolated_loss_grad_ms"]),
                     fmt(r["other_cores_max"], 3), yes(r.get("valid"))])
    return [provenance(d), "", markdown_table(
        ["batch", "mining", "step, null loss (ms)", "step, triplet loss (ms)", "loss + mining (ms)", "share of the step",
         "loss + gradient alone (ms)", "other procs (cores)", "valid"], rows), ""]


def pipeline_section(d):
    labels = {"load": "`read_images` of the train split (decode + resize, once)",
              "in_memory": "`pk_dataset`, in memory", "from_disk": "`pk_dataset`, from disk (decode + resize per batch)",
              "in_memory_light": "`pk_dataset`, in memory + `augmentation: light` (albumentations)",
              "in_memory_default": "`pk_dataset`, in memory + `augmentation: default` (albumentations)"}
    rows = []
    for key, label in labels.items():
        r = d["rows"].get(key)
        if r is None:
            continue
        fit = d["rows"].get(f"fit_{key}")
        rows.append([label, fmt(r.get("images_per_sec"), 0), fmt(fit.get("images_per_sec"), 0) if fit else "-",
                     (fmt(r["images_per_sec"] / fit["images_per_sec"], 1) + "x") if fit and fit.get("images_per_sec") else "-",
                     fmt(r.get("other_procs_cpu_cores"), 3), yes(r.get("valid"))])
    return [provenance(d), "", markdown_table(
        ["pipeline", "delivers alone (images/s)", "training fed by it (images/s)", "headroom",
         "other procs (cores)", "valid"], rows), "",
        f"{fmt(d.get('train_images'))} images of {fmt(d.get('train_classes'))} classes, batch {d.get('batch')}. "
        "Augmentation rows: `augment_dataset` with the preset, as train.py builds it "
        "(albumentations per image in a parallel `tf.data` map).", ""]


def inference_section(d, threshold):
    def ok(v):
        return yes(v is not None and v <= threshold)

    e = d["embed"]
    lines = [provenance(d), "", markdown_table(
        ["embedding throughput", "batch", "images/s", "other procs (cores)", "valid"],
        [[f"conv4 28 px, embedding {e['embedding']} (`embed_images`)", e["batch"], fmt(e["images_per_sec"], 0),
          fmt(e["other_procs_cpu_cores"], 3), ok(e["other_procs_cpu_cores"])]]), ""]
    rows = []
    for label, key in (("`test.py --image one.png` (32,460 encodings; train.py's LiteRT copy)", "test_py_cold_start"),
                       ("`test.py --image one.png --keras` (model.keras through TensorFlow)", "test_py_keras_cold_start"),
                       ("`python -c 'import tensorflow'` (for scale)", "import_tensorflow")):
        r = d[key]
        # Results before the series meter judged each sub-second run alone (the max of the runs).
        other = r.get("other_procs_cpu_cores_series", r.get("other_procs_cpu_cores_max"))
        rows.append([label, fmt(r.get("first_s"), 2), fmt(r.get("median_s"), 2), len(r.get("runs", [])),
                     fmt(other, 3), ok(other)])
    lines += [markdown_table(["cold start, new process", "first run (s)", "median (s)", "runs",
                              "other procs (cores, over the runs)", "valid"], rows), ""]
    rows = [[fmt(r["stored"]), r["dim"], fmt(r["classes"]), fmt(r["single_query_ms_median"], 3),
             fmt(r["single_query_ms_p90"], 3), fmt(r["batched_ms_per_query"], 4),
             fmt(r["other_procs_cpu_cores"], 3), ok(r["other_procs_cpu_cores"])] for r in d["search"]]
    batched = d["search"][0]["batched_queries"] if d["search"] else None
    lines += [markdown_table(["stored encodings (random unit vectors)", "D", "classes", "one query alone (ms, median)",
                              "p90 (ms)", f"{fmt(batched)} queries at once (ms per query)", "other procs (cores)",
                              "valid"], rows), ""]
    return lines


# --------------------------------------------------------------------------- document
def render(results, threshold, other=()):
    quick = sorted(k for k, d in results.items() if d.get("quick"))
    hosts = {}
    for k, d in results.items():
        h = d.get("host") or d.get("machine") or {}
        hosts.setdefault((h.get("cpu"), h.get("cpu_count"), h.get("memory_gib")), []).append(k)
    L = ["# Benchmarks", "",
         "<!-- Generated by `python bench/report.py` from bench/results/*.json. Do not edit by hand: "
         "rerun the benchmarks and regenerate. -->", ""]
    if quick:
        L += ["> **Smoke runs only.** " + ", ".join(f"`{k}`" for k in quick) + " come from `--quick` runs (a few "
              "steps, seconds each, on a shared machine): they show that the scripts work and what they report, "
              "**not** how fast or accurate anything is. Run the commands below on a quiet machine and regenerate "
              "this file.", ""]
    L += ["Issue #5. Each benchmark is a script in `bench/` that prints its tables and writes one JSON file to "
          "`bench/results/`; this file is rendered from those JSON files by `bench/report.py`. The peer is "
          "pytorch-metric-learning on PyTorch CPU (`../shared/bench/peer_pml.py`, its set-up in "
          "`bench/README.md`). Timings count only when the machine is quiet: every timing records the CPU other "
          f"processes used meanwhile, and above {threshold} cores (5% of one core) it is marked invalid and "
          "no ratio is drawn from it.", "", "## Machine", ""]
    if hosts:
        rows = [[cpu or "?", fmt(n), fmt(mem), ", ".join(sorted(ks))] for (cpu, n, mem), ks in hosts.items()]
        L += [markdown_table(["CPU (lscpu model name)", "cores", "memory (GiB)", "results"], rows), ""]
    else:
        L += ["No results yet.", ""]
    vers = next((d["versions"] for d in results.values() if isinstance(d.get("versions"), dict)
                 and "ours" in d["versions"]), None)
    if vers:
        o, p = vers.get("ours") or {}, vers.get("peer") or {}
        L += [f"Software: embedding_net {o.get('embedding_net')}, Keras {o.get('keras')}, TensorFlow "
              f"{o.get('tensorflow')} (TF_ENABLE_ONEDNN_OPTS={o.get('TF_ENABLE_ONEDNN_OPTS')}); peer: PyTorch "
              f"{p.get('torch')}, pytorch-metric-learning {p.get('pml')}.", ""]
    L += ["## Commands", "", "From the repository root (`NO_ALBUMENTATIONS_UPDATE=1` is set by the scripts):", "",
          "```bash"]
    L += [f"{cmd:<48} # {note}" for _, cmd, note in COMMANDS]
    L += ["python bench/report.py                           # regenerate this file", "```", ""]

    def section(title, keys, fn, intro=None):
        L.extend([f"## {title}", ""])
        if intro:
            L.extend([intro, ""])
        for key in keys:
            if key in results:
                L.extend(fn(results[key]))
            else:
                cmd = next((c for k, c, _ in COMMANDS if k == key), f"bench/{key}.py")
                L.extend([f"_`{key}`: not run yet (`{cmd}`)._", ""])

    thr_keys = [k for k, _, _ in COMMANDS if k.startswith("throughput")]
    thr_keys += sorted(k for k in results if k.startswith("throughput") and k not in thr_keys)
    section("Training throughput: ours vs the peer", thr_keys, throughput_section,
            "Same network and inputs on both sides; A = ours (`model.fit` over `pk_dataset`, in memory), B = the "
            "peer, alternately in one run, each in its own process. images/s = batch / median step time after "
            "warm-up. Each library applies its own rule of the mining name: PML's `hard` is every triplet with "
            "d(a,n) < d(a,p), not batch-hard.")
    section("Accuracy at equal wall-clock training budgets", ["accuracy"], accuracy_section,
            "Omniglot evaluation set (659 characters never trained on). Both sides evaluated on identical inputs "
            "and identical episodes; ours with embedding_net's own evaluation functions.")
    section("Cost of the loss and its mining", ["mining"], mining_section,
            "Median step with the triplet loss minus the median step with a loss that mines nothing, same "
            "model, batches and optimiser (`model.fit`).")
    section("Input pipeline vs training", ["pipeline"], pipeline_section)
    section("Inference", ["inference"],
            lambda d: inference_section(d, (d.get("config") or {}).get("noise_threshold", threshold)))
    for key in sorted(k for k, d in results.items() if d.get("kind") in SECTIONS):
        L += SECTIONS[results[key]["kind"]](results[key], results[key]["_file"])
    for key, section_of in (("search", search_section), ("search_classes", search_classes_section)):
        L += section_of(results[key], results[key]["_file"]) if key in results else []
    if other:
        L += ["## Other files in bench/results", "",
              "Not written by the benchmarks above, so not rendered here: "
              + ", ".join(f"`{f}`" for f in other) + ".", ""]
    return "\n".join(L).rstrip() + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=lib.RESULTS)
    ap.add_argument("--output", default=os.path.join(lib.REPO, "BENCHMARKS.md"), help="'-' prints to stdout")
    ap.add_argument("--noise-threshold", type=float, default=lib.DEFAULT_NOISE_THRESHOLD)
    a = ap.parse_args(argv)
    results, other = load(a.results)
    text = render(results, a.noise_threshold, other)
    if a.output == "-":
        sys.stdout.write(text)
    else:
        lib.atomic_write_text(a.output, text)
        print(f"[report] wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
