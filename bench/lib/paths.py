"""Where the benchmarks read and write, the peer's defaults, and our mining names in the peer's terms.

Importing this puts the repository on `sys.path`, so a benchmark run as `python bench/x.py` imports
the checkout's `embedding_net`."""

import os
import sys


BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

RESULTS = os.path.join(BENCH, "results")
CACHE = os.path.join(BENCH, "cache")
# The peer (pytorch-metric-learning) lives outside the repository, see /work/shared/bench/README.md.
DEFAULT_PEER_PYTHON = os.path.join(os.path.dirname(REPO), ".venv-peer", "bin", "python")
DEFAULT_PEER_SCRIPT = os.path.join(os.path.dirname(REPO), "shared", "bench", "peer_pml.py")
# Our shipped Omniglot; byte-identical to ../shared/datasets/omniglot (checked by `omniglot_dir`).
DEFAULT_OMNIGLOT = os.path.join(REPO, "embedding_net", "data", "datasets", "files", "omniglot")
DEFAULT_NOISE_THRESHOLD = 0.05  # cores kept busy by other processes; 0.05 = 5% of one core

# Our names of the triplet mining rules -> the peer's --miner values. Caution: PML's "hard" is
# every triplet with d(a,n) < d(a,p) (not batch-hard), and its "semihard" every triplet with
# d(a,p) < d(a,n) < d(a,p) + margin (not FaceNet's one negative per pair); each library is
# measured with its own rule of that name.
PEER_MINER = {"semi_hard": "semihard", "hard": "hard", "all": "all"}
