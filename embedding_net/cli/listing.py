"""`--list NAME`: the names a registry offers, one per line, as the config accepts them."""

import importlib

# What can be listed -> "module:function" (imported only when asked: most registries live
# beside Keras code). Losses and minings are listed per architecture or kind.
LISTS = {
    "architectures": "embedding_net.models.architectures:list_architectures",
    "augmentations": "embedding_net.data.presets:list_augmentations",
    "backbones": "embedding_net.models.backbones:list_backbones",
    "configs": "embedding_net.cli.configs:list_configs",
    "datasets": "embedding_net.data.datasets:list_datasets",
    "distances": "embedding_net.evaluation.distances:list_distances",
    "index-backends": "embedding_net.index.registry:list_backends",
    "losses": "embedding_net.cli.listing:losses_by_architecture",
    "minings": "embedding_net.cli.listing:minings_by_kind",
    "optimizers": "embedding_net.optim.optimizers:list_optimizers",
    "schedules": "embedding_net.optim.schedules:list_schedules",
}


def losses_by_architecture():
    from embedding_net.losses.registry import ARCHITECTURES, list_losses

    return [f"{name}  ({architecture})" for architecture in ARCHITECTURES for name in list_losses(architecture)]


def minings_by_kind():
    from embedding_net.mining.registry import list_minings
    from embedding_net.models.architectures import architecture_entry, list_architectures

    kinds = sorted({architecture_entry(name).info["mining"] for name in list_architectures()})
    return [f"{name}  ({kind})" for kind in kinds for name in list_minings(kind)]


def names_of(what):
    module, _, function = LISTS[what].partition(":")
    return list(getattr(importlib.import_module(module), function)())


def print_list(what):
    for name in names_of(what):
        print(name)
