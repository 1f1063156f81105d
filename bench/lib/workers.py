"""Worker start-up: benchmarks run each measured side in its own subprocess (ours, the peer's),
and a worker replies with one JSON line."""

import json
import os
import subprocess
import sys
import time

from lib.noise import NoiseMeter
from lib.paths import REPO


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
