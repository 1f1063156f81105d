"""Command-line options every benchmark shares, and `finish`, which writes the result."""

import os
import sys
import time

from lib.host import host_info
from lib.output import atomic_write_json, default_output
from lib.paths import DEFAULT_NOISE_THRESHOLD, DEFAULT_OMNIGLOT, DEFAULT_PEER_PYTHON, DEFAULT_PEER_SCRIPT, REPO


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
