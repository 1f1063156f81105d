"""The Omniglot inputs both libraries see: the same images at the same size, resized by the
same code, and the keys of the official one-shot task."""

import json
import os
import time

from lib.paths import CACHE, DEFAULT_OMNIGLOT
from lib.workers import peer_available, run_subprocess


def omniglot_dir(path=None):
    return os.path.abspath(path or DEFAULT_OMNIGLOT)


def _pil_replica(images_bool, size):
    """The peer's preprocessing (peer_pml.omniglot_float, resize='bilinear'): ink = 1.0,
    background 0.0, PIL bilinear on mode 'F' images. float32 [N*D, size, size]."""
    from PIL import Image
    import numpy as np

    n, d, h, w = images_bool.shape
    ink = (~images_bool.reshape(n * d, h, w)).astype(np.float32)
    if size == h == w:
        return ink
    out = np.empty((n * d, size, size), dtype=np.float32)
    for i in range(n * d):
        out[i] = np.asarray(Image.fromarray(ink[i], mode="F").resize((size, size), Image.BILINEAR),
                            dtype=np.float32)
    return out


def omniglot_inputs(size, data_dir=None, peer_python=None, peer_script=None, log=print):
    """The Omniglot arrays both libraries train and evaluate on, as our model takes them.

    Source: the peer's own `--save-inputs` arrays (its exact preprocessing: 105 -> size with
    PIL bilinear on float images, ink = 1.0, background = 0.0), when the peer is installed;
    otherwise the same PIL code run here (`_pil_replica`, recorded as such). Our model takes raw
    uint8 images and divides by 255 itself (`ImagePreprocessing(mode="unit")`), so the floats
    are quantised to uint8 (round(x * 255)); the JSON records the largest error (<= 1/510).
    Cached in bench/cache/.

    Returns:
        dict with x_train uint8 [19280, size, size, 1] (flat index = character * 20 + drawer,
        label = character), y_train int32, x_eval, y_eval, and `info` (the source).
    """
    import numpy as np

    data_dir = omniglot_dir(data_dir)
    os.makedirs(CACHE, exist_ok=True)
    cache = os.path.join(CACHE, f"omniglot_{size}px_bilinear_uint8.npz")
    if os.path.isfile(cache):
        with np.load(cache, allow_pickle=False) as z:
            out = {k: z[k] for k in ("x_train", "y_train", "x_eval", "y_eval")}
            out["info"] = json.loads(str(z["info"]))
        return out
    t0 = time.perf_counter()
    floats = None
    source = None
    if peer_python and peer_script and peer_available(peer_python, peer_script):
        tmp = os.path.join(CACHE, f".peer_inputs_{size}_{os.getpid()}.npz")
        log(f"[inputs] peer --save-inputs at {size}px (once; cached in {cache})")
        rc, out, err, *_ = run_subprocess([peer_python, peer_script, "--omniglot", data_dir, "--size", str(size),
                                           "--save-inputs", tmp], timeout=1800)
        if rc == 0 and os.path.isfile(tmp):
            with np.load(tmp) as z:
                floats = {k: z[k] for k in ("x_train", "y_train", "x_eval", "y_eval")}
            os.remove(tmp)
            source = "peer_pml.py --save-inputs (its PIL bilinear float preprocessing), quantised to uint8"
        else:
            log(f"[inputs] peer --save-inputs failed (rc {rc}): {err[-500:]}; using the PIL replica")
    if floats is None:
        bg = np.load(os.path.join(data_dir, "images_background.npz"))["images"]
        ev = np.load(os.path.join(data_dir, "images_evaluation.npz"))["images"]
        floats = {"x_train": _pil_replica(bg, size)[:, None], "y_train": np.repeat(np.arange(bg.shape[0]), bg.shape[1]),
                  "x_eval": _pil_replica(ev, size)[:, None], "y_eval": np.repeat(np.arange(ev.shape[0]), ev.shape[1])}
        source = "bench PIL replica of the peer's preprocessing (peer not installed), quantised to uint8"
    out, err_max = {}, 0.0
    for split in ("train", "eval"):
        x = floats[f"x_{split}"]  # [N, 1, s, s] float in [0, 1]
        q = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
        err_max = max(err_max, float(np.abs(q.astype(np.float32) / 255.0 - x).max()))
        out[f"x_{split}"] = np.ascontiguousarray(q.transpose(0, 2, 3, 1))  # NHWC
        out[f"y_{split}"] = floats[f"y_{split}"].astype(np.int32)
    info = {"source": source, "omniglot_dir": data_dir, "size": size, "resize": "PIL bilinear (float)",
            "ink": 255, "background": 0, "dtype": "uint8", "max_quantisation_error": round(err_max, 6),
            "n_train": int(len(out["y_train"])), "n_eval": int(len(out["y_eval"])),
            "prepare_seconds": round(time.perf_counter() - t0, 1)}
    tmp = cache + f".tmp-{os.getpid()}.npz"
    np.savez(tmp, info=np.array(json.dumps(info)), **out)
    os.replace(tmp, cache)
    out["info"] = info
    return out


def oneshot_embedding_keys(data_dir=None):
    """The official runs (paths relative to images_evaluation/) and a map path -> flat eval
    index (character * 20 + drawer - 1), exactly as the peer resolves them."""
    import numpy as np

    data_dir = omniglot_dir(data_dir)
    with open(os.path.join(data_dir, "oneshot_runs.json"), encoding="utf-8") as f:
        runs = json.load(f)["runs"]
    with np.load(os.path.join(data_dir, "images_evaluation.npz"), allow_pickle=False) as z:
        alphabet, character, cids = z["alphabet"], z["character"], z["character_id"]
        drawers = z["images"].shape[1]
    key = {(str(a), str(c)): i for i, (a, c) in enumerate(zip(alphabet, character))}
    index = {}
    for run in runs:
        for path in run["support"] + [t["query"] for t in run["trials"]]:
            alpha, char, fname = path.split("/")
            i = key[(alpha, char)]
            cid, drawer = os.path.splitext(fname)[0].split("_")
            assert int(cid) == int(cids[i]), path
            index[path] = i * drawers + int(drawer) - 1
    return runs, index
