"""`train.py --data DIR` with no other setting against hand-written configs, on two folder data
sets that the tests never use, at equal steps: is the data's own choice within 2 points?

    python bench/folder_data.py                  # both sets, ~15 min on 2 cores
    python bench/folder_data.py --steps 100 --epochs 2 --sets digits   # a quick look

The sets are built from what ships with the packages, nothing downloaded:
- `digits`: scikit-learn's 1,797 handwritten digits (8 x 8 grayscale, 10 classes), upscaled
  to 32 x 32 PNGs; no val/ folder, so `--data` holds 20% of each class out.
- `glyphs`: 36 characters (0-9, A-Z) drawn with OpenCV's eight Hershey fonts, in colour on
  coloured backgrounds, 44 x 52 px, randomly scaled, rotated and shifted; 40 train and 10 val
  images per class in train/ and val/.
Each run trains the same number of steps; the figures are the val split's top-1 accuracy
(queries against the train images) and MAP@R. Writes bench/results/folder_data.json.
"""

import argparse
import os
import subprocess
import sys

import cv2
import numpy as np

from lib.host import host_info
from lib.output import atomic_write_json
from lib.paths import REPO, RESULTS

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
         cv2.FONT_HERSHEY_SCRIPT_COMPLEX)
CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Hand-written configs per set: what a user who knows the data would write (`--set` lists on
# configs/folder.yml); the best at equal steps is the reference.
HAND = {
    "digits": {"conv4_28_gray": ["model.input_shape=[28, 28, 1]", "data.classes_per_batch=10"],
               "conv4_32_gray": ["model.input_shape=[32, 32, 1]", "data.classes_per_batch=10"]},
    "glyphs": {"conv4_48_rgb": ["model.input_shape=[48, 48, 3]", "data.classes_per_batch=32"],
               "conv4_32_rgb": ["model.input_shape=[32, 32, 3]", "data.classes_per_batch=32"],
               "conv4_48_gray": ["model.input_shape=[48, 48, 1]", "data.classes_per_batch=32"]},
}


def build_digits(root):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = os.path.join(root, "train", f"digit_{label}")
        os.makedirs(folder, exist_ok=True)
        pixels = (255 - image * 255 / 16).astype(np.uint8)  # dark ink on white, as scanned
        cv2.imwrite(os.path.join(folder, f"{index:04d}.png"), cv2.resize(pixels, (32, 32), interpolation=cv2.INTER_NEAREST))
    return root


def _glyph(character, rng):
    background = rng.integers(120, 256, 3)
    image = np.empty((52, 44, 3), np.uint8)
    image[:] = background
    ink = tuple(int(v) for v in np.clip(background - rng.integers(90, 200, 3), 0, 255))
    scale, font = rng.uniform(0.9, 1.4), FONTS[rng.integers(len(FONTS))]
    (width, height), _ = cv2.getTextSize(character, font, scale, 2)
    origin = (int((44 - width) / 2 + rng.integers(-4, 5)), int((52 + height) / 2 + rng.integers(-4, 5)))
    cv2.putText(image, character, origin, font, scale, ink, int(rng.integers(1, 4)), cv2.LINE_AA)
    turn = cv2.getRotationMatrix2D((22, 26), rng.uniform(-15, 15), 1.0)
    return cv2.warpAffine(image, turn, (44, 52), borderMode=cv2.BORDER_REPLICATE)


def build_glyphs(root, seed=0):
    rng = np.random.default_rng(seed)
    for split, count in (("train", 40), ("val", 10)):
        for character in CHARACTERS:
            folder = os.path.join(root, split, f"char_{character}")
            os.makedirs(folder, exist_ok=True)
            for index in range(count):
                cv2.imwrite(os.path.join(folder, f"{index:03d}.png"), _glyph(character, rng))
    return root


def train(args, name, extra, work_dir):
    command = [sys.executable, os.path.join(REPO, "train.py"), *extra,
               "--set", f"train.epochs={args.epochs}", "--set", f"train.steps_per_epoch={args.steps}",
               "--set", "evaluation.plots=false", "--set", "train.export_litert=false",
               "--set", "train.export_serving=false", "--set", "output.tensorboard=false",
               "--set", "train.verbose=0", "--set", f"output.work_dir={work_dir}", "--set", f"output.name={name}"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-2000:]}")
    metrics = {}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(": ")
        if key in ("top1_accuracy", "map_at_r", "train_seconds"):
            metrics[key] = float(value)
    chosen = [line for line in result.stdout.splitlines() if line.startswith(("data:", "  "))]
    return metrics, chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--sets", nargs="*", default=["digits", "glyphs"])
    parser.add_argument("--work-dir", default=os.path.join(REPO, "work_dirs", "bench_folder_data"))
    args = parser.parse_args()
    results = {}
    for name in args.sets:
        root = os.path.join(args.work_dir, "data", name)
        if not os.path.isdir(root):
            (build_digits if name == "digits" else build_glyphs)(root)
        runs = {}
        runs["data_auto"], choices = train(args, f"{name}_auto", ["--data", root], args.work_dir)
        for hand, overrides in HAND[name].items():
            extra = ["--config", "folder"] + [item for o in [f"data.root={root}", *overrides] for item in ("--set", o)]
            if name == "digits":
                extra += ["--set", "data.val_ratio=0.2"]
            runs[hand] = train(args, f"{name}_{hand}", extra, args.work_dir)[0]
        best = max((k for k in runs if k != "data_auto"), key=lambda k: runs[k]["top1_accuracy"])
        gap = runs[best]["top1_accuracy"] - runs["data_auto"]["top1_accuracy"]
        results[name] = {"runs": runs, "choices": choices, "best_hand": best, "gap_points": round(100 * gap, 2)}
        print(name, results[name], flush=True)
    atomic_write_json(os.path.join(RESULTS, "folder_data.json"), {
        "kind": "folder_data", "host": host_info(), "epochs": args.epochs, "steps_per_epoch": args.steps, "results": results})


if __name__ == "__main__":
    main()
