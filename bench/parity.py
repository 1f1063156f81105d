"""Our losses against pytorch-metric-learning's on the same saved batches: value and gradient.

For every loss PML also has, with the same hyperparameters and PML's default reducer, both
libraries see the same labels, embeddings and class centres (saved as .npz); ours computes in
float32 as in training, PML in float64 (the reference) and in float32 (the floor any float32
implementation meets). Reported: the relative difference of the value, |ours - PML| / |PML|,
and of the gradient with respect to the embeddings, max |ours - PML| / max |PML| (and with
respect to the class centres, for the losses that have them).

    python bench/parity.py                 # PML from ../.venv-peer, see ../shared/bench/README.md
    python bench/parity.py --seeds 10 --output bench/results/parity.json
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import lib
import numpy as np

TARGET = 1e-5  # the bound on both relative differences

# name -> (our loss: registry name and settings, PML: loss, options, miner, reducer, inputs).
# Euclidean losses take the embeddings as they are, so PML's LpDistance must not normalise.
CASES = {
    "triplet (all)": ({"name": "triplet", "margin": 0.2, "mining": "all"},
                      {"loss": "TripletMarginLoss", "options": {"margin": 0.2, "unnormalised_lp": True}}),
    "triplet (hard)": ({"name": "triplet", "margin": 0.2, "mining": "hard"},
                       {"loss": "TripletMarginLoss", "options": {"margin": 0.2, "unnormalised_lp": True},
                        "miner": "BatchHardMiner", "miner_options": {"unnormalised_lp": True},
                        "reducer": "MeanReducer"}),  # ours: the mean over anchors, PML's default: over non-zero
    "contrastive": ({"name": "contrastive"},
                    {"loss": "ContrastiveLoss", "options": {"pos_margin": 0.0, "neg_margin": 1.0,
                                                            "unnormalised_lp": True}}),
    "multi_similarity": ({"name": "multi_similarity"}, {"loss": "MultiSimilarityLoss",
                                                         "options": {"alpha": 2.0, "beta": 50.0, "base": 0.5}}),
    "multi_similarity + miner": ({"name": "multi_similarity", "mining_epsilon": 0.1},
                                 {"loss": "MultiSimilarityLoss", "options": {"alpha": 2.0, "beta": 50.0, "base": 0.5},
                                  "miner": "MultiSimilarityMiner", "miner_options": {"epsilon": 0.1}}),
    "supcon": ({"name": "supcon", "temperature": 0.1}, {"loss": "SupConLoss", "options": {"temperature": 0.1}}),
    "circle": ({"name": "circle", "margin": 0.4, "gamma": 80.0},
               {"loss": "CircleLoss", "options": {"m": 0.4, "gamma": 80.0}}),
    "proxy_anchor": ({"name": "proxy_anchor", "margin": 0.1, "alpha": 32.0},
                     {"loss": "ProxyAnchorLoss", "options": {"margin": 0.1, "alpha": 32.0}}),
    "cosface": ({"name": "cosface", "margin": 0.35, "scale": 64.0},
                {"loss": "CosFaceLoss", "options": {"margin": 0.35, "scale": 64.0}}),
    "arcface": ({"name": "arcface", "margin": math.radians(28.6), "scale": 64.0},
                {"loss": "ArcFaceLoss", "options": {"margin": 28.6, "scale": 64.0}}),  # PML's margin: degrees
    "sub-center arcface (k=3)": ({"name": "arcface", "margin": math.radians(28.6), "scale": 64.0, "sub_centers": 3},
                                 {"loss": "SubCenterArcFaceLoss",
                                  "options": {"margin": 28.6, "scale": 64.0, "sub_centers": 3}}),
}


def make_inputs(seed, settings, classes, per_class, dim, num_classes):
    """A P x K batch of `classes` x `per_class` with labels drawn from `num_classes`; embeddings
    clustered by class, of norm about 1 (so the euclidean margins bite); class centres where the
    loss has them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.choice(num_classes, classes, replace=False), per_class)
    # Classes as clusters, so that margins and the miners separate easy pairs from hard ones;
    # seeds cycle through tight, middling and loose clusters.
    spread = (0.05, 0.1, 0.2)[seed % 3]
    directions = spread * rng.normal(size=(num_classes, dim))[labels] + rng.normal(size=(len(labels), dim)) / math.sqrt(dim)
    embeddings = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(0.8, 1.2, (len(labels), 1))
    arrays = {"labels": labels, "embeddings": embeddings.astype(np.float32), "num_classes": np.int64(num_classes)}
    if settings["name"] in ("proxy_anchor", "cosface", "arcface"):
        arrays["weights"] = rng.normal(size=(dim, num_classes * settings.get("sub_centers", 1))).astype(np.float32)
    return arrays


def ours(settings, arrays):
    """Our loss's value, its gradient with respect to the embeddings and to the class centres
    (None without centres), in float32 as in training."""
    import tensorflow as tf

    from embedding_net.losses import batch_loss

    settings = dict(settings)
    embeddings = tf.Variable(arrays["embeddings"])
    loss, layer = batch_loss(settings.pop("name"), num_classes=int(arrays["num_classes"]), **settings)
    function = lambda: loss(arrays["labels"], embeddings)  # noqa: E731
    if layer is not None:
        layer.build(embeddings.shape)
        layer.centers.assign(arrays["weights"])
    sources = [embeddings] if layer is None else [embeddings, layer.centers]
    with tf.GradientTape() as tape:
        value = function()
    gradients = [g.numpy().astype(np.float64) for g in tape.gradient(value, sources)]
    return float(value), gradients[0], (gradients[1] if layer is not None else None)


def relative(ours_value, ours_gradient, value, gradient):
    value_difference = abs(ours_value - value) / max(abs(value), 1e-12)
    scale = np.abs(gradient).max()
    gradient_difference = float(np.abs(ours_gradient - gradient).max() / scale) if scale > 0 else float(
        np.abs(ours_gradient).max())
    return value_difference, gradient_difference


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--classes", type=int, default=16, help="P, classes in a batch")
    parser.add_argument("--per-class", type=int, default=4, help="K, images of each class")
    parser.add_argument("--dim", type=int, default=64, help="embedding size")
    parser.add_argument("--num-classes", type=int, default=40, help="classes with a centre (proxy losses)")
    parser.add_argument("--peer-python", default=lib.DEFAULT_PEER_PYTHON)
    parser.add_argument("--output", default=lib.default_output("parity"))
    args = parser.parse_args()
    if not os.path.exists(args.peer_python):
        sys.exit(f"error: no peer interpreter at {args.peer_python}; see ../shared/bench/README.md")
    import embedding_net  # noqa: F401  (before TensorFlow, see bench/lib)

    with tempfile.TemporaryDirectory() as folder:
        cases, computed = [], {}
        for name, (settings, pml) in CASES.items():
            for seed in range(args.seeds):
                arrays = make_inputs(seed, settings, args.classes, args.per_class, args.dim, args.num_classes)
                path = os.path.join(folder, f"case{len(cases)}.npz")
                np.savez(path, **arrays)
                cases.append({"name": name, "seed": seed, "pml": pml, "inputs": path})
                computed[path] = ours(settings, arrays)
        cases_path = os.path.join(folder, "cases.json")
        with open(cases_path, "w") as handle:
            json.dump(cases, handle)
        peer = subprocess.run([args.peer_python, os.path.join(lib.BENCH, "lib", "parity_pml.py"), cases_path],
                              capture_output=True, text=True)
        if peer.returncode != 0:
            sys.exit(f"error: the peer failed:\n{peer.stderr[-3000:]}")
        versions = json.loads(peer.stdout.strip().splitlines()[-1])
        rows = {}
        for case in cases:
            with np.load(case["inputs"][:-4] + ".pml.npz", allow_pickle=False) as pml:
                reference = float(pml["value64"]), pml["gradient64"]
                value, gradient, centres = computed[case["inputs"]]
                ours_difference = relative(value, gradient, *reference)
                floor = relative(float(pml["value32"]), pml["gradient32"], *reference)
                if centres is not None:
                    centres_difference = relative(0.0, centres, 0.0, pml["centres64"])[1]
                    row_centres = rows.setdefault(case["name"], {}).get("centres_gradient", 0.0)
                    rows[case["name"]]["centres_gradient"] = max(row_centres, centres_difference)
            row = rows.setdefault(case["name"], {})
            for key, start in (("values", []), ("value", 0.0), ("gradient", 0.0), ("pml_float32_value", 0.0),
                               ("pml_float32_gradient", 0.0)):
                row.setdefault(key, start)
            row["values"].append(reference[0])
            row["value"], row["gradient"] = max(row["value"], ours_difference[0]), max(row["gradient"], ours_difference[1])
            row["pml_float32_value"] = max(row["pml_float32_value"], floor[0])
            row["pml_float32_gradient"] = max(row["pml_float32_gradient"], floor[1])
    for row in rows.values():
        row["within_target"] = max(row["value"], row["gradient"], row.get("centres_gradient", 0.0)) <= TARGET
    result = {"kind": "parity", "target": TARGET, "seeds": args.seeds, "batch": f"{args.classes} x {args.per_class}",
              "embedding_size": args.dim, "num_classes": args.num_classes, "cases": rows,
              "machine": lib.host_info(), "peer": versions, "ours": lib.ml_versions()}
    lib.atomic_write_json(args.output, result)
    lib.print_table("Parity with pytorch-metric-learning (max over seeds; PML float64 is the reference)",
                    ["loss", "PML value (seed 0)", "value rel. diff", "gradient rel. diff", "centres' gradient",
                     "PML float32: value", "PML float32: gradient", f"<= {TARGET:g}"],
                    [[name, f"{row['values'][0]:.5g}", f"{row['value']:.1e}", f"{row['gradient']:.1e}",
                      f"{row['centres_gradient']:.1e}" if "centres_gradient" in row else "-",
                      f"{row['pml_float32_value']:.1e}", f"{row['pml_float32_gradient']:.1e}",
                      lib.fmt(row["within_target"])] for name, row in rows.items()])
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
