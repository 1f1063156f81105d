"""Shared fixtures: a small Omniglot subset and a tiny training config."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402

# Two background alphabets for training, one evaluation alphabet that has official one-shot runs.
SUBSET_ALPHABETS = frozenset({"Latin", "Greek", "Atlantean"})


@pytest.fixture(scope="session", autouse=True)
def dataset_cache(tmp_path_factory):
    """The shipped datasets go to a cache of the session's own (`embedding_net.cache`), never
    the user's ~/.cache; the scripts run by the tests inherit it."""
    folder = str(tmp_path_factory.mktemp("cache"))
    previous = os.environ.get("EMBEDDING_NET_CACHE")
    os.environ["EMBEDDING_NET_CACHE"] = folder
    yield folder
    if previous is None:
        os.environ.pop("EMBEDDING_NET_CACHE", None)
    else:
        os.environ["EMBEDDING_NET_CACHE"] = previous


@pytest.fixture(scope="session")
def omniglot_subset(tmp_path_factory):
    """A materialised Omniglot with 50 train characters and 26 val characters (one-shot run 1)."""
    from embedding_net.data.datasets.omniglot import materialize_omniglot

    return materialize_omniglot(str(tmp_path_factory.mktemp("data") / "omniglot"), alphabets=SUBSET_ALPHABETS)
