"""Where embedding_net keeps what it writes for itself: the shipped datasets, materialised.

A dataset addressed by name (`data.dataset: omniglot`, `train.py --data omniglot`) is written
here, never into a folder the user typed: a mistyped `data.root` must be an error, not a
folder quietly filled with Omniglot and trained on.

The folder is `$EMBEDDING_NET_CACHE` when set, else `$XDG_CACHE_HOME/embedding_net`, else
`~/.cache/embedding_net`. Imports nothing heavy: the config checks use it before TensorFlow.
"""

import os

CACHE_VARIABLE = "EMBEDDING_NET_CACHE"


def cache_dir():
    """The cache folder (not created here)."""
    if os.environ.get(CACHE_VARIABLE):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_VARIABLE]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "embedding_net")


def dataset_dir(name):
    """The folder that holds the shipped dataset `name` once it is materialised."""
    return os.path.join(cache_dir(), "datasets", name)
