"""Datasets that ship with embedding_net, by name (see `registry`), turned into the standard
folder layout on first use."""

from embedding_net.data.datasets.registry import get_dataset, list_datasets, register_dataset
from embedding_net.data.datasets.omniglot import is_materialized, materialize_omniglot

__all__ = ["get_dataset", "is_materialized", "list_datasets", "materialize_omniglot", "register_dataset"]
