"""Training: the one reader of the config. `run(config)` trains as a config says, in phases
(data, setup, fit, outputs), with atomic checkpoints, resume after a kill, mining generators,
soft-max pre-training and the distributed loop.

    from embedding_net.config import load_config
    from embedding_net.training import run
    metrics = run(load_config("configs/omniglot.yml", ["train.epochs=1"]))

Only `train.py` and `bench/` import this package (an import-linter contract in setup.cfg);
everything it builds is also available from plain arguments in the other packages.
"""

from embedding_net.training.runner import run

__all__ = ["run"]
