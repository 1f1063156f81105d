"""Shared pieces of the benchmarks in bench/: paths, host description, CPU noise measurement,
per-step timing inside `model.fit`, subprocess runs, the Omniglot inputs both libraries see,
atomic JSON output and table printing.

Nothing here imports TensorFlow or Keras at module level, so `bench/report.py` (and a driver
that only starts subprocesses) stays light. Worker code imports `embedding_net` before
TensorFlow, so that the oneDNN switch of `embedding_net/__init__.py` takes effect.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

RESULTS = os.path.join(BENCH, "results")
CACHE = os.path.join(BENCH, "cache")
# The peer (pytorch-metric-learning) lives outside the repository, see /work/shared/bench/README.md.
DEFAULT_PEER_PYTHON = os.path.join(os.path.dirname(REPO), ".venv-peer", "bin", "python")
DEFAULT_PEER_SCRIPT = os.path.join(os.path.dirname(REPO), "shared", "bench", "peer_pml.py")
# Our shipped Omniglot; byte-identical to ../shared/datasets/omniglot (checked by `omniglot_dir`).
DEFAULT_OMNIGLOT = os.path.join(REPO, "embedding_net", "datasets", "files", "omniglot")
DEFAULT_NOISE_THRESHOLD = 0.05  # cores kept busy by other processes; 0.05 = 5% of one core

# Our names of the triplet mining rules -> the peer's --miner values. Caution: PML's "hard" is
# every triplet with d(a,n) < d(a,p) (not batch-hard), and its "semihard" every triplet with
# d(a,p) < d(a,n) < d(a,p) + margin (not FaceNet's one negative per pair); each library is
# measured with its own rule of that name.
PEER_MINER = {"semi_hard": "semihard", "hard": "hard", "all": "all"}


# --------------------------------------------------------------------------- output
def atomic_write_json(path, obj):
    """Writes `obj` as indented JSON to `path` via a temporary file and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(obj, out, indent=1, allow_nan=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".txt", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise
    return path


def fmt(value, digits=1, percent=False):
    """A table cell: '-' for None/NaN, thousands separators, optional percent."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    try:
        if value != value:  # NaN
            return "-"
    except TypeError:
        return str(value)
    if percent:
        return f"{100 * value:.{digits}f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def markdown_table(headers, rows):
    """A GitHub markdown table (list of row lists, cells already strings or numbers)."""
    cells = [[str(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def print_table(title, headers, rows):
    print(f"\n## {title}\n")
    print(markdown_table(headers, rows))
    print(flush=True)


def default_output(name):
    return os.path.join(RESULTS, f"{name}.json")


# --------------------------------------------------------------------------- host
def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def host_info():
    """The machine, for the JSON and BENCHMARKS.md."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "cpus_usable": affinity,
            "memory_gib": mem, "machine": platform.machine(), "system": platform.system(),
            "release": platform.release(), "python": platform.python_version(),
            "loadavg": [round(v, 2) for v in os.getloadavg()],
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def ml_versions():
    """Versions in this interpreter (imports TensorFlow: call in workers only)."""
    import keras
    import numpy
    import tensorflow as tf

    import embedding_net

    return {"embedding_net": embedding_net.__version__, "keras": keras.__version__,
            "tensorflow": tf.__version__, "numpy": numpy.__version__,
            "keras_backend": keras.backend.backend(),
            "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS")}


# --------------------------------------------------------------------------- CPU noise
_HZ = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU seconds all processes have used since boot (/proc/stat: user, nice, system, irq,
    softirq, steal; not idle or iowait; guest time is already inside user)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = v[0] + v[1] + v[2] + sum(v[5:8])
    return busy / _HZ


def own_cpu_seconds():
    """CPU seconds of this process (all its threads) and of its children it has reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def process_tree_cpu_seconds(pid):
    """utime + stime (+ reaped children) of `pid` and of every live descendant (/proc/<pid>/stat)."""
    children = {}
    stats = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        ppid = int(fields[1])
        stats[int(entry)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0)
        todo.extend(children.get(p, []))
    return total / _HZ


class NoiseMeter:
    """Average number of cores kept busy by *other* processes between `start()` and `stop()`.

    other = (machine busy CPU seconds - this process's own CPU seconds, threads and reaped
    children included) / wall seconds. ~0 on a quiet machine; 1.0 means another process held
    a whole core. A driver that waits for a subprocess sees the subprocess's CPU as its own
    once it has reaped it, so the same meter works for a worker thread pool and a driver.
    With `pid`, the CPU of that live process tree is counted as its own instead.
    """

    def __init__(self, pid=None):
        self.pid = pid

    def _own(self):
        return process_tree_cpu_seconds(self.pid) if self.pid else own_cpu_seconds()

    def start(self):
        self.t0 = (machine_busy_seconds(), self._own(), time.perf_counter())
        return self

    def stop(self):
        busy, own, wall = machine_busy_seconds(), self._own(), time.perf_counter()
        d_wall = wall - self.t0[2]
        if d_wall < 0.25:  # /proc/stat counts in 1/100 s: too coarse for a shorter window
            return None
        other = (busy - self.t0[0]) - (own - self.t0[1])
        return round(max(0.0, other) / d_wall, 4)


def validity(other_cores, threshold):
    """(valid, reason) of a timing measured while others used `other_cores` cores."""
    if other_cores is None:
        return False, "other-process CPU not measured"
    if other_cores > threshold:
        return False, (f"noisy machine: other processes used {other_cores:.3f} cores "
                       f"(> {threshold:.3f})")
    return True, ""


# --------------------------------------------------------------------------- timing
def summarize(seconds, warmup=0):
    """Median/mean/p10/p90 in ms of the step times after `warmup`."""
    meas = list(seconds[warmup:]) if len(seconds) > warmup else list(seconds)
    if not meas:
        return {"timed_steps": 0, "median_ms": None}
    srt = sorted(meas)

    def pct(q):
        return srt[min(len(srt) - 1, int(round(q * (len(srt) - 1))))]

    return {"timed_steps": len(meas), "median_ms": round(1000 * statistics.median(meas), 3),
            "mean_ms": round(1000 * statistics.fmean(meas), 3), "p10_ms": round(1000 * pct(0.1), 3),
            "p90_ms": round(1000 * pct(0.9), 3)}


def step_timer(warmup=5, time_budget=None, max_timed_seconds=None, min_timed_steps=3, noise_from_start=False):
    """A Keras callback recording the wall time of every `fit` step.

    A step's time is the interval between consecutive `on_train_batch_end` calls (the first
    from `on_train_batch_begin`): it covers fetching the batch from the `tf.data` pipeline, the
    forward and backward pass, the optimizer update and Keras' per-step bookkeeping, like the
    peer's whole-step time. The callback overrides `on_train_batch_end`, so Keras dispatches
    callbacks synchronously (as with the default progress bar).

    Other-process CPU is measured from the end of warm-up step `warmup` to the end of
    training (from the start of training with `noise_from_start`, as the peer does).
    `time_budget` (seconds since `on_train_begin`, i.e. before the first step, whose tracing
    counts) stops `fit` after the step in flight; `max_timed_seconds` stops it once that long
    has been timed after warm-up (and at least `min_timed_steps` steps).
    """
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step_seconds = []
            self.noise = NoiseMeter()
            self.other_cores = None
            self.t_train = self.t_prev = self.t_warm = None
            self.train_seconds = None
            self.stopped_by = "steps"

        def on_train_begin(self, logs=None):
            self.t_train = time.perf_counter()
            if noise_from_start:
                self.noise.start()
            if warmup == 0:
                self.noise.start()
                self.t_warm = self.t_train

        def on_train_batch_begin(self, batch, logs=None):
            if self.t_prev is None:
                self.t_prev = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.step_seconds.append(now - self.t_prev)
            self.t_prev = now
            if len(self.step_seconds) == warmup:
                if not noise_from_start:
                    self.noise.start()
                self.t_warm = now
            if time_budget is not None and now - self.t_train >= time_budget:
                self.stopped_by = "time_budget"
                self.model.stop_training = True
            timed = len(self.step_seconds) - warmup
            if (max_timed_seconds is not None and self.t_warm is not None and timed >= min_timed_steps
                    and now - self.t_warm >= max_timed_seconds):
                self.stopped_by = "max_timed_seconds"
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.train_seconds = time.perf_counter() - self.t_train
            if self.t_warm is not None or noise_from_start:
                self.other_cores = self.noise.stop()

        def result(self, batch_size):
            s = summarize(self.step_seconds, warmup)
            med = s.get("median_ms")
            s.update({"steps": len(self.step_seconds), "warmup_steps_excluded": min(warmup, len(self.step_seconds)),
                      "first_step_ms": round(1000 * self.step_seconds[0], 1) if self.step_seconds else None,
                      "images_per_sec_median": round(1000 * batch_size / med, 2) if med else None,
                      "train_wall_seconds": round(self.train_seconds, 3) if self.train_seconds else None,
                      "images_per_sec_overall": (round(len(self.step_seconds) * batch_size / self.train_seconds, 2)
                                                 if self.train_seconds else None),
                      "stopped_by": self.stopped_by,
                      "other_procs_cpu_cores": self.other_cores})
            return s

    return StepTimer()


# --------------------------------------------------------------------------- subprocesses
def run_subprocess(cmd, timeout=None, log_path=None, echo=False):
    """Runs `cmd`, returns (rc, stdout, stderr_tail, wall_s, other_cores_whole_run, json_or_None).

    The JSON is the last stdout line that parses as a JSON object. Other-process CPU is
    measured by the driver over the subprocess's whole life (startup included).
    """
    env = dict(os.environ)
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    meter = NoiseMeter().start()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # our own child, by its handle
        out, err = proc.communicate()
        err += f"\n[bench] killed after {timeout} s"
    wall = time.perf_counter() - t0
    other = meter.stop()
    if log_path:
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        with open(log_path, "w", encoding="utf-8") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n--- stdout\n" + out + "\n--- stderr\n" + err)
    if echo:
        sys.stdout.write(out)
    parsed = None
    for line in reversed(out.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    return proc.returncode, out, err[-4000:], round(wall, 2), other, parsed


def worker_reply(obj):
    """A worker's last stdout line: one JSON object."""
    sys.stdout.flush()
    print(json.dumps(obj, allow_nan=True), flush=True)


def peer_available(peer_python, peer_script):
    return os.path.isfile(peer_python) and os.access(peer_python, os.X_OK) and os.path.isfile(peer_script)


def peer_versions(peer_python):
    code = ("import json,platform,torch,pytorch_metric_learning as p,numpy;"
            "print(json.dumps({'python':platform.python_version(),'torch':torch.__version__,"
            "'pml':p.__version__,'numpy':numpy.__version__}))")
    rc, out, err, *_ = run_subprocess([peer_python, "-c", code], timeout=300)
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": err[-300:]}


# --------------------------------------------------------------------------- Omniglot inputs
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


# --------------------------------------------------------------------------- CLI helpers
def add_peer_args(ap):
    ap.add_argument("--peer-python", default=DEFAULT_PEER_PYTHON,
                    help="python of the peer's virtual environment (torch, pytorch-metric-learning)")
    ap.add_argument("--peer-script", default=DEFAULT_PEER_SCRIPT, help="peer_pml.py")
    ap.add_argument("--omniglot", default=DEFAULT_OMNIGLOT,
                    help="folder with images_background.npz, images_evaluation.npz, oneshot_runs.json")


def add_common_args(ap, name):
    ap.add_argument("--output", default=None, help=f"JSON result file (default: bench/results/{name}.json)")
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run (tiny settings)")
    ap.add_argument("--noise-threshold", type=float, default=DEFAULT_NOISE_THRESHOLD,
                    help="cores other processes may use during a timing before it is marked invalid")
    ap.add_argument("--_worker", default=None, help=__import__("argparse").SUPPRESS)


def finish(name, args, payload, started):
    """Adds the common fields and writes the JSON atomically; returns the path."""
    payload = {"benchmark": name, "quick": bool(args.quick),
               "command": "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
               "host": host_info(), "wall_seconds": round(time.perf_counter() - started, 1), **payload}
    path = args.output or default_output(name)
    atomic_write_json(path, payload)
    print(f"\n[bench] wrote {os.path.relpath(path, os.getcwd()) if path.startswith(os.getcwd()) else path}"
          f" ({payload['wall_seconds']} s){'  [QUICK smoke run: not a measurement]' if args.quick else ''}",
          flush=True)
    return path
