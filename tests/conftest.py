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
