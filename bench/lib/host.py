"""The machine record every result carries: CPU model, cores, memory, library versions."""

import os
import platform
import subprocess
import time


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from embedding_net.cpu import cpu_model as cpuinfo_model

    return cpuinfo_model()


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


def code_revision():
    """The commit our side ran (short hash), with "+changes" when the library or the configs
    differed from it; None outside a git checkout. Results measured before a change in training
    then say so row by row."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        changed = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "embedding_net"],
                                 capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+changes" if changed.stdout.strip() else "")


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
