"""Answering "unknown": the share of out-of-domain images rejected, and the in-domain accuracy
lost, for the global threshold train.py stores and for the class radius (and a k-NN density
ratio, measured only) of `embedding_net.inference.rejection`.

    python train.py --set train.epochs=4 --set evaluation.plots=false --set output.work_dir=/tmp/unknown_runs
    python bench/unknown.py --write-photo-folder /tmp/unknown_photos
    python train.py --data /tmp/unknown_photos --set "model.input_shape=[32,32,3]" --set train.epochs=4 \\
        --set train.steps_per_epoch=100 --set evaluation.plots=false --set output.work_dir=/tmp/unknown_runs \\
        --set output.name=photos
    python bench/unknown.py --omniglot-run /tmp/unknown_runs/omniglot --photo-run /tmp/unknown_runs/photos \\
        --photo-folder /tmp/unknown_photos

Omniglot: the run's gallery (train + val characters) less 4 seeded drawings of every val
character (characters the model never trained on), which are the in-domain queries; and, as
in the issue, a few val characters enrolled alone (3 with 5 drawings, 20 with 10; 30 seeded
trials each, their other drawings the in-domain queries). The photo
folder: 48 classes, the cells of a 4 x 6 grid over scikit-learn's two sample photographs
(china.jpg, flower.jpg), each image a random square crop around its cell's centre (16 train
train crops per class are the gallery; 8 val crops per class calibrate the rule that is
calibrated on held-out images; 16 test crops per class, drawn with another seed, are the in-domain
queries). Out of domain:
the photographs and crops of them (Omniglot only), uniform noise, blank white and black, inverted
Omniglot characters (white on black), digits and Latin capitals drawn with cv2.putText, and
scikit-learn's 8 x 8 handwritten digits; plus Omniglot characters for the photo model.

Every rule is calibrated on the gallery alone; `--target-loss` is the share of the gallery's own
images (left out one at a time) each calibrated rule rejects. Writes bench/results/unknown.json.
"""

import argparse
import os
import tempfile
import time

import cv2
import numpy as np

import lib

KINDS = ("photos", "noise", "blank", "inverted", "rendered", "digits_8x8", "omniglot")


def write_photo_folder(root, rows=4, cols=6, seed=0):
    """root/{train,val,test}/<photo>_r<row>c<col>/<i>.png: 16, 8 and 16 random square crops
    (60-90% of the cell's shorter side, centre within 1/8 of the cell of its centre) of the two
    sample photographs. train.py reads train and val; test (its own seed) is only queried here."""
    from sklearn.datasets import load_sample_image

    for splits, generator in (((("train", 16), ("val", 8)), seed), ((("test", 16),), seed + 1)):
        rng = np.random.default_rng(generator)
        for name in ("china.jpg", "flower.jpg"):
            photo = load_sample_image(name)[:, :, ::-1]  # RGB -> BGR for cv2.imwrite
            (h, w), (ch, cw) = photo.shape[:2], (photo.shape[0] // rows, photo.shape[1] // cols)
            for r in range(rows):
                for c in range(cols):
                    for split, count in splits:
                        folder = os.path.join(root, split, f"{name.split('.')[0]}_r{r}c{c}")
                        os.makedirs(folder, exist_ok=True)
                        for i in range(count):
                            side = int(rng.integers(int(0.6 * min(ch, cw)), int(0.9 * min(ch, cw)) + 1))
                            y = int(np.clip(r * ch + ch // 2 + rng.integers(-ch // 8, ch // 8 + 1) - side // 2,
                                            0, h - side))
                            x = int(np.clip(c * cw + cw // 2 + rng.integers(-cw // 8, cw // 8 + 1) - side // 2,
                                            0, w - side))
                            cv2.imwrite(os.path.join(folder, f"{i:03d}.png"), photo[y : y + side, x : x + side])


def out_of_domain(root, omniglot_paths, seed=0):
    """Writes the out-of-domain images as files (test.py's reading path); {kind: [paths]}."""
    from sklearn.datasets import load_digits, load_sample_image

    rng = np.random.default_rng(seed)
    images = {kind: [] for kind in KINDS}
    for name in ("china.jpg", "flower.jpg"):
        photo = load_sample_image(name)[:, :, ::-1]
        images["photos"].append(photo)
        for _ in range(10):
            side = int(rng.integers(60, 300))
            y, x = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
            images["photos"].append(photo[y : y + side, x : x + side])
    images["noise"] = [rng.integers(0, 256, (105, 105), dtype=np.uint8) for _ in range(10)]
    images["blank"] = [np.full((105, 105), 255, np.uint8), np.zeros((105, 105), np.uint8)]
    characters = [omniglot_paths[i] for i in rng.choice(len(omniglot_paths), 20, replace=False)]
    images["omniglot"] = [cv2.imread(p, cv2.IMREAD_GRAYSCALE) for p in characters]
    images["inverted"] = [255 - image for image in images["omniglot"]]
    for text in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        canvas = np.full((105, 105), 255, np.uint8)
        cv2.putText(canvas, text, (22, 82), cv2.FONT_HERSHEY_SIMPLEX, 2.6, 0, 6, cv2.LINE_AA)
        images["rendered"].append(canvas)
    digits = load_digits().images[rng.choice(1797, 20, replace=False)]
    images["digits_8x8"] = [cv2.resize(255 - (d * 255 / 16).astype(np.uint8), (105, 105),
                                       interpolation=cv2.INTER_NEAREST) for d in digits]
    paths = {}
    for kind, found in images.items():
        os.makedirs(os.path.join(root, kind), exist_ok=True)
        paths[kind] = [os.path.join(root, kind, f"{i:03d}.png") for i in range(len(found))]
        for path, image in zip(paths[kind], found):
            cv2.imwrite(path, image)
    return paths


def embed(model, paths):
    from embedding_net.data.images import read_images
    from embedding_net.inference import embed_images, model_image_shape

    height, width, channels = model_image_shape(model)
    images, failed = read_images(paths, (height, width), channels)
    assert not failed, failed
    return embed_images(model, images)


def density_rule(index, target_loss, per_class=False, k=5):
    """k-NN density ratio (measured, not shipped): a query's distance to its k-th nearest
    reference over the mean of its k neighbours' own k-th (leave-one-out) distances, or with
    `per_class` over the medians of their classes' (values storable as JSON); the limit is the
    1 - target_loss quantile of the references' own ratios."""
    k = min(k, index.count - 2)
    distances, ids = index.search(index.vectors(np.arange(index.count)), k + 2)
    own, labels = distances[:, k], np.asarray(index.labels)  # column 0 is the reference itself
    if per_class:
        own = np.array([np.median(own[labels == c]) for c in range(len(index.class_names))])[labels]
    limit = np.quantile(distances[:, k] / own[ids[:, 1 : k + 1]].mean(axis=1), 1 - target_loss)

    def rejected(queries):
        d, i = index.search(queries, k)
        return d[:, k - 1] / own[i].mean(axis=1) > limit
    return rejected


def measure(gallery, labels, class_names, distance, queries, query_labels, ood, stored, targets, held_out=None):
    """One row per rule: in-domain accuracy kept and lost, in-domain rejected, OOD rejected."""
    from embedding_net.index import EmbeddingIndex
    from embedding_net.inference import rejection

    index = EmbeddingIndex.build(gallery, labels, class_names, distance=distance)
    kinds = [kind for kind in KINDS if kind in ood]
    everything = np.concatenate([queries] + [ood[kind] for kind in kinds])
    rows = index.classify(everything, top_k=1)
    distances = np.array([row["distance"] for row in rows])
    correct = np.array([row["prediction"] == class_names[c] for row, c in zip(rows, query_labels)])
    split = np.cumsum([len(queries)] + [len(ood[kind]) for kind in kinds])

    def row(rule, rejected, **extra):
        inside, outside = rejected[: len(queries)], rejected[len(queries) :]
        kept = float(np.mean(correct & ~inside))
        per_kind = {kind: float(part.mean()) for kind, part in zip(kinds, np.split(rejected, split)[1:-1])}
        return {"rule": rule, **extra, "in_domain_accuracy": kept,
                "in_domain_accuracy_lost": float(correct.mean()) - kept,
                "in_domain_rejected": float(inside.mean()), "wrong_answers_rejected": float(inside[~correct].mean())
                if (~correct).any() else None, "ood_rejected": float(outside.mean()),
                "ood_rejected_by_kind": per_kind}

    results = [row("threshold (stored)", distances > stored, threshold=stored)]
    loo = rejection.leave_one_out_distances(gallery, labels, distance)[1]
    for target in targets:
        global_limit = float(np.quantile(loo, 1 - target))
        results.append(row("global distance", distances > global_limit, target_loss=target, threshold=global_limit))
        for on in (None, held_out) if held_out is not None else (None,):
            calibration = rejection.calibrate(gallery, labels, class_names, distance, target, held_out=on)
            after = rejection.reject([dict(r) for r in rows], calibration)
            rejected = np.array([r["prediction"] == "unknown" for r in after]) | (distances > stored)
            results.append(row("class radius + stored threshold", rejected, target_loss=target,
                               calibrated_on=calibration["calibrated_on"].split(" (")[0],
                               scale=calibration["scale"], default_radius=calibration["default_radius"]))
        for per_class in (False, True):
            results.append(row("k-NN density ratio" + (", per class" if per_class else ""),
                               density_rule(index, target, per_class)(everything), target_loss=target))
    return {"gallery_images": len(gallery), "gallery_classes": len(np.unique(labels)), "queries": len(queries),
            "ood_images": {kind: len(ood[kind]) for kind in kinds}, "accuracy": float(correct.mean()),
            "stored_threshold": stored, "results": results}


def enrolment_trials(encodings, ood, classes, shots, trials, seed):
    """The issue's case: `classes` val characters enrolled with `shots` drawings each, their
    other drawings queried, `trials` times; the rows are averages over the trials."""
    from embedding_net.inference.rejection import TARGET_LOSS

    rng = np.random.default_rng(seed)
    val = np.unique(encodings.labels[[f"{os.sep}val{os.sep}" in p for p in encodings.paths]])
    runs = []
    for _ in range(trials):
        drawn = [rng.permutation(np.flatnonzero(encodings.labels == c))
                 for c in rng.choice(val, classes, replace=False)]
        gallery, queries = np.concatenate([d[:shots] for d in drawn]), np.concatenate([d[shots:] for d in drawn])
        query_labels = np.concatenate([np.full(len(d) - shots, i) for i, d in enumerate(drawn)])
        runs.append(measure(encodings.embeddings[gallery], np.repeat(np.arange(classes), shots),
                            [f"class_{i}" for i in range(classes)], encodings.metadata.get("distance", "euclidean"),
                            encodings.embeddings[queries], query_labels, ood,
                            encodings.metadata.get("threshold", np.inf), [TARGET_LOSS]))
    numbers = ("in_domain_accuracy", "in_domain_accuracy_lost", "in_domain_rejected", "ood_rejected")
    results = [{"rule": rows[0]["rule"], "target_loss": rows[0].get("target_loss"),
                **{key: float(np.mean([r[key] for r in rows])) for key in numbers},
                "ood_rejected_by_kind": {kind: float(np.mean([r["ood_rejected_by_kind"][kind] for r in rows]))
                                         for kind in rows[0]["ood_rejected_by_kind"]}}
               for rows in zip(*(run["results"] for run in runs))]
    return {"classes": classes, "shots": shots, "trials": trials, "queries": runs[0]["queries"],
            "ood_images": runs[0]["ood_images"], "accuracy": float(np.mean([r["accuracy"] for r in runs])),
            "results": results}


def omniglot_domain(run, holdout, seed, workdir, targets, trials):
    from embedding_net.inference import load_encodings, load_inference_model

    encodings = load_encodings(os.path.join(run, "encodings.npz"))
    model = load_inference_model(os.path.join(run, "model.keras"))
    rng = np.random.default_rng(seed)
    val = np.array([f"{os.sep}val{os.sep}" in p for p in encodings.paths])
    held = np.concatenate([rng.choice(np.flatnonzero(encodings.labels == c), holdout, replace=False)
                           for c in np.unique(encodings.labels[val])])
    keep = np.setdiff1d(np.arange(len(encodings.labels)), held)
    paths = out_of_domain(workdir, [encodings.paths[i] for i in held], seed)
    ood = {kind: embed(model, paths[kind]) for kind in KINDS if kind != "omniglot"}
    result = measure(encodings.embeddings[keep], encodings.labels[keep], encodings.class_names,
                     encodings.metadata.get("distance", "euclidean"), encodings.embeddings[held],
                     encodings.labels[held], ood, encodings.metadata.get("threshold", np.inf), targets)
    return result, [enrolment_trials(encodings, ood, classes, shots, trials, seed)
                    for classes, shots in ((3, 5), (20, 10))]


def photo_domain(run, folder, omniglot_paths, seed, workdir, targets):
    from embedding_net.data.folders import scan_image_folder
    from embedding_net.inference import load_encodings, load_inference_model

    encodings = load_encodings(os.path.join(run, "encodings.npz"))
    model = load_inference_model(os.path.join(run, "model.keras"))
    index = {name: i for i, name in enumerate(encodings.class_names)}
    splits = {}
    for split in ("val", "test"):  # val calibrates (a run's held-out split), test queries
        found = scan_image_folder(os.path.join(folder, split), min_images_per_class=1)
        splits[split] = (embed(model, list(found.paths)),
                         np.array([index[found.class_names[c]] for c in found.labels]))
    paths = out_of_domain(workdir, omniglot_paths, seed)
    ood = {kind: embed(model, paths[kind]) for kind in KINDS if kind != "photos"}
    return measure(encodings.embeddings, encodings.labels, encodings.class_names,
                   encodings.metadata.get("distance", "euclidean"), *splits["test"], ood,
                   encodings.metadata.get("threshold", np.inf), targets, held_out=splits["val"])


def print_domain(name, result):
    rows = [[r["rule"] + (f" [{r['calibrated_on']}]" if "calibrated_on" in r else ""),
             lib.fmt(r.get("target_loss"), 0, True), lib.fmt(r["ood_rejected"], 0, True),
             lib.fmt(r["in_domain_accuracy_lost"], 1, True), lib.fmt(r["in_domain_rejected"], 1, True),
             lib.fmt(r.get("wrong_answers_rejected"), 0, True),
             " ".join(f"{k} {100 * v:.0f}" for k, v in r["ood_rejected_by_kind"].items())]
            for r in result["results"]]
    lib.print_table(f"{name}: {result['queries']} in-domain queries (accuracy {100 * result['accuracy']:.1f}%), "
                    f"{sum(result['ood_images'].values())} out-of-domain images",
                    ["rule", "target", "OOD rejected", "in-domain acc. lost", "in-domain rejected",
                     "wrong answers rejected", "OOD rejected % by kind"],
                    rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-photo-folder", metavar="DIR", help="write the photo folder to DIR and exit")
    ap.add_argument("--omniglot-run", default=os.path.join(lib.REPO, "work_dirs", "omniglot"))
    ap.add_argument("--photo-run", help="a run trained on the photo folder (skipped when absent)")
    ap.add_argument("--photo-folder", help="the folder --write-photo-folder wrote")
    ap.add_argument("--holdout", type=int, default=4, help="held-out drawings per val character (default: 4)")
    ap.add_argument("--target-loss", type=float, nargs="+", default=[0.01, 0.02, 0.05])
    ap.add_argument("--seed", type=int, default=0)
    lib.add_common_args(ap, "unknown")
    args = ap.parse_args(argv)
    if args.write_photo_folder:
        write_photo_folder(args.write_photo_folder, seed=args.seed)
        print(f"wrote {args.write_photo_folder}")
        return 0
    started = time.perf_counter()
    payload = {"omniglot_run": os.path.abspath(args.omniglot_run), "holdout": args.holdout, "seed": args.seed}
    with tempfile.TemporaryDirectory() as workdir:
        payload["omniglot"], payload["omniglot_enrolled"] = omniglot_domain(
            args.omniglot_run, args.holdout, args.seed, os.path.join(workdir, "omniglot"), args.target_loss,
            3 if args.quick else 30)
        print_domain("Omniglot", payload["omniglot"])
        for result in payload["omniglot_enrolled"]:
            print_domain(f"Omniglot, {result['classes']} val characters enrolled with {result['shots']} drawings "
                         f"({result['trials']} trials)", result)
        if args.photo_run:
            from embedding_net.inference import load_encodings

            characters = load_encodings(os.path.join(args.omniglot_run, "encodings.npz")).paths
            payload.update(photo_run=os.path.abspath(args.photo_run),
                           photo_folder=os.path.abspath(args.photo_folder))
            payload["photos"] = photo_domain(args.photo_run, args.photo_folder, characters, args.seed,
                                             os.path.join(workdir, "photos"), args.target_loss)
            print_domain("Photo folder", payload["photos"])
    lib.finish("unknown", args, payload, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
