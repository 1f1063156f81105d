"""Datasets that ship with embedding_net, turned into the standard folder layout on first use."""

from embedding_net.data.datasets.omniglot import is_materialized, materialize_omniglot

DATASETS = {"omniglot": materialize_omniglot}
