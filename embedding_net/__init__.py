"""embedding_net: image embeddings with Siamese, triplet and proxy networks in Keras 3.

The public surface, one package per concept (the README's "Where things live" table):

    import embedding_net as en
    en.losses.get_loss("triplet")(margin=0.4)       # losses/      registered losses
    en.models.build_embedding_model("conv4")        # models/      backbones, layers, architectures
    en.mining.list_minings("batch")                 # mining/      B x B rules in keras.ops
    en.data.scan_image_folder("photos/train")       # data/        folders, images, P x K sampling
    en.evaluation.retrieval_metrics(x, y)           # evaluation/  NumPy metrics
    en.inference.load_encodings("encodings.npz")    # inference/   TensorFlow-free classification
    en.index.EmbeddingIndex.build(x, y, names)      # index/       exact and approximate search
    en.viz.plot_tsne(x, y)                          # viz/         pictures
    en.optim.build_optimizer("adam", 1e-3)          # optim/       optimizers and schedules
    en.training.run(en.config.load_config(path))    # training/    the one reader of the config

Subpackages load on first use, so `import embedding_net` stays cheap and the TensorFlow-free
ones (`data`, `evaluation`, `inference`, `index`, `viz`) never import TensorFlow. The custom
Keras objects are registered as soon as Keras is loaded too (before or after this package), so
`keras.saving.load_model("model.keras")` works after a plain `import embedding_net`.
"""

import importlib
import os

# TensorFlow leaves its oneDNN kernels off on some CPUs (AMD among them), where turning them on
# makes training about 1.7x faster; it only takes effect if set before TensorFlow is imported.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.2.0"

SUBPACKAGES = ("config", "data", "evaluation", "index", "inference", "losses", "mining", "models", "optim",
               "training", "viz")


def __getattr__(name):
    if name in SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *SUBPACKAGES])


# Last: registering may import subpackages, which import this (by then complete) package.
from embedding_net import registration  # noqa: E402

registration.install()
