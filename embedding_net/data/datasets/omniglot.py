"""Omniglot (Lake et al. 2015), shipped as compact arrays, written out as an image folder.

`materialize_omniglot(root)` produces:

    root/train/<alphabet>__<character>/<id>_<drawer>.png   964 background characters
    root/val/<alphabet>__<character>/<id>_<drawer>.png     659 evaluation characters
    root/oneshot_runs.json                                 the official 20-way one-shot task
    root/.embedding_net_dataset.json                       written last: marks it complete

Everything is written into a temporary sibling folder that is renamed onto `root` at the end,
so an interrupted run never leaves a `root` that looks complete.
"""

import concurrent.futures
import glob
import json
import os
import shutil

import cv2
import numpy as np

from embedding_net.data.datasets.registry import register_dataset
from embedding_net.errors import DatasetError

SOURCE_DIR = os.path.join(os.path.dirname(__file__), "files", "omniglot")
SPLIT_FILES = {"train": "images_background.npz", "val": "images_evaluation.npz"}
MARKER = ".embedding_net_dataset.json"
ONESHOT_FILE = "oneshot_runs.json"


def is_materialized(root):
    """True when `root` holds a dataset whose materialisation finished."""
    return os.path.isfile(os.path.join(root, MARKER))


def class_name(alphabet, character):
    """The class folder name of one character: `<alphabet>__<character>`."""
    return f"{alphabet}__{character}"


def _write_split(arrays, split_dir, alphabets, pool):
    written = {}
    jobs = []
    for i in range(len(arrays["character_id"])):
        alphabet, character = str(arrays["alphabet"][i]), str(arrays["character"][i])
        if alphabets is not None and alphabet not in alphabets:
            continue
        folder = os.path.join(split_dir, class_name(alphabet, character))
        os.makedirs(folder)
        for drawer in range(arrays["images"].shape[1]):
            file_name = f"{int(arrays['character_id'][i]):04d}_{drawer + 1:02d}.png"
            # True = white background, as the original binary PNGs.
            pixels = arrays["images"][i, drawer].astype(np.uint8) * 255
            jobs.append(pool.submit(cv2.imwrite, os.path.join(folder, file_name), pixels))
            written[f"{alphabet}/{character}/{file_name}"] = f"{class_name(alphabet, character)}/{file_name}"
    for job in jobs:
        if not job.result():
            raise DatasetError(f"could not write the Omniglot images under {split_dir}")
    return written


def _convert_oneshot_runs(source, written_val):
    """Rewrites the official runs' paths into the folder layout; keeps runs fully present."""
    with open(source, encoding="utf-8") as handle:
        official = json.load(handle)
    runs = []
    for run in official["runs"]:
        paths = run["support"] + [t["query"] for t in run["trials"]]
        if not all(p in written_val for p in paths):
            continue
        runs.append({
            "run": run["run"],
            "support": [f"val/{written_val[p]}" for p in run["support"]],
            "trials": [{"query": f"val/{written_val[t['query']]}",
                        "answer": f"val/{written_val[t['answer']]}"} for t in run["trials"]],
        })
    return {"description": official["description"].replace(
        "relative to images_evaluation", "relative to the dataset root"), "runs": runs}


@register_dataset("omniglot")
def materialize_omniglot(root, alphabets=None, source_dir=SOURCE_DIR):
    """Writes Omniglot under `root` unless a complete copy is already there.

    Args:
        root: the dataset folder to create (its parent is created if needed).
        alphabets: optional collection of alphabet names to keep (a small subset for tests);
            one-shot runs whose images are not all kept are dropped.
        source_dir: folder with the compact `.npz` files and `oneshot_runs.json`.

    Returns:
        `root`.

    Raises:
        DatasetError: `root` exists but is not a complete materialised dataset.
    """
    if is_materialized(root):
        return root
    if os.path.exists(root):
        raise DatasetError(
            f"{root} exists but is not a complete materialised dataset (no {MARKER}); "
            "delete it and run again to write the dataset there afresh"
        )
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    for stale in glob.glob(glob.escape(os.path.abspath(root)) + ".partial-*"):
        if not _process_alive(stale.rsplit("-", 1)[-1]):  # never delete another run's work
            shutil.rmtree(stale, ignore_errors=True)
    partial = f"{os.path.abspath(root)}.partial-{os.getpid()}"
    try:
        written = {}
        _check_alphabets(source_dir, alphabets)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for split, file_name in SPLIT_FILES.items():
                with np.load(os.path.join(source_dir, file_name), allow_pickle=False) as npz:
                    arrays = {key: npz[key] for key in npz.files}  # each npz[key] re-reads
                written[split] = _write_split(arrays, os.path.join(partial, split), alphabets, pool)
        counts = {split: len(files) for split, files in written.items()}
        runs = _convert_oneshot_runs(os.path.join(source_dir, ONESHOT_FILE), written["val"])
        with open(os.path.join(partial, ONESHOT_FILE), "w", encoding="utf-8") as handle:
            json.dump(runs, handle, indent=1)
        with open(os.path.join(partial, MARKER), "w", encoding="utf-8") as handle:
            json.dump({"dataset": "omniglot", "images": counts, "oneshot_runs": len(runs["runs"]),
                       "alphabets": sorted(alphabets) if alphabets is not None else "all"}, handle)
        os.rename(partial, root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if is_materialized(root):  # another process finished the same work first
            return root
        raise
    return root



def _process_alive(pid_text):
    try:
        os.kill(int(pid_text), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _check_alphabets(source_dir, alphabets):
    """Every requested alphabet must exist, and the train split must keep at least one (a
    dataset without val trains, but cannot be evaluated)."""
    if alphabets is None:
        return
    known = {}
    for split, file_name in SPLIT_FILES.items():
        with np.load(os.path.join(source_dir, file_name), allow_pickle=False) as npz:
            known[split] = set(str(a) for a in npz["alphabet"])
    unknown = set(alphabets) - known["train"] - known["val"]
    if unknown:
        raise DatasetError(f"unknown Omniglot alphabet(s): {', '.join(sorted(unknown))}")
    if not known["train"] & set(alphabets):
        raise DatasetError("the requested alphabets leave the Omniglot train split empty")
