"""The shared harness of the benchmarks in bench/, one concept per module: `paths`, `output`
(atomic JSON, tables), `host` (the machine record), `noise` (other processes' CPU), `timing`
(per-step times in `model.fit`), `workers` (subprocesses and their replies), `omniglot` (the
inputs both libraries see) and `cli` (shared options, `finish`). Every name is re-exported
here: a benchmark does `import lib` and calls `lib.fmt(...)`.

Nothing here imports TensorFlow or Keras at module level, so `bench/report.py` (and a driver
that only starts subprocesses) stays light. Worker code imports `embedding_net` before
TensorFlow, so that the oneDNN switch of `embedding_net/__init__.py` takes effect.
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from lib.paths import *  # noqa: E402,F401,F403
from lib.output import *  # noqa: E402,F401,F403
from lib.host import *  # noqa: E402,F401,F403
from lib.noise import *  # noqa: E402,F401,F403
from lib.timing import *  # noqa: E402,F401,F403
from lib.workers import *  # noqa: E402,F401,F403
from lib.omniglot import *  # noqa: E402,F401,F403
from lib.cli import *  # noqa: E402,F401,F403
