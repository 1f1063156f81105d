"""Shared fixtures: a small Omniglot subset and a tiny training config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402

# Two background alphabets for training, one evaluation alphabet that has official one-shot runs.
SUBSET_ALPHABETS = frozenset({"Latin", "Greek", "Atlantean"})


@pytest.fixture(scope="session")
def omniglot_subset(tmp_path_factory):
    """A materialised Omniglot with 50 train characters and 26 val characters (one-shot run 1)."""
    from embedding_net.data.datasets.omniglot import materialize_omniglot

    return materialize_omniglot(str(tmp_path_factory.mktemp("data") / "omniglot"), alphabets=SUBSET_ALPHABETS)


def tiny_overrides(root, work_dir, name="tiny", plots=False, export_litert=False):
    """`--set` overrides for a run of a few seconds on the subset (without the LiteRT copy,
    a few seconds more, unless `export_litert`)."""
    return [
        f"data.root={root}", "data.dataset=omniglot", "data.classes_per_batch=8",
        "data.images_per_class=2", "train.epochs=2", "train.steps_per_epoch=3",
        "train.validation_steps=2", "train.verbose=0", "model.embedding_size=16",
        f"output.work_dir={work_dir}", f"output.name={name}", "evaluation.episodes=100",
        f"evaluation.plots={'true' if plots else 'false'}", "evaluation.tsne_max_points=200",
        f"train.export_litert={'true' if export_litert else 'false'}",
    ]
