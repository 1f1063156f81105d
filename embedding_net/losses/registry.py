"""The losses by name: `register_loss`, `get_loss`, `list_losses`.

A loss is registered for the model architecture it trains (`embedding`: the plain embedding
model on P x K batches; `siamese`: pairs from a mining generator; `triplet`: triplets from a
mining generator), so one name such as `contrastive` can mean the loss of each architecture.
Its settings are the keys of the config's `loss` section that it reads: by default its
constructor's keyword arguments, or those named at registration (`mining` for the losses
whose batches a generator mines: the generator reads it).

Adding a loss is one new file in this package with its decorator, and an import line in
`embedding_net/losses/__init__.py`.
"""

from embedding_net.errors import ConfigError
from embedding_net.registry import Registry

ARCHITECTURES = ("embedding", "siamese", "triplet")
_REGISTRIES = {architecture: Registry(f"loss of the {architecture} architecture") for architecture in ARCHITECTURES}


def _registry(architecture):
    if architecture not in _REGISTRIES:
        raise ConfigError(f"unknown architecture {architecture!r}; available: {', '.join(ARCHITECTURES)}")
    return _REGISTRIES[architecture]


def register_loss(name, architecture="embedding", settings=None, **info):
    """Registers a loss class as `name` for `architecture`; returns a decorator."""
    return _registry(architecture).register(name, settings=settings, **info)


def get_loss(name, architecture="embedding"):
    """The loss class registered as `name` for `architecture` (a `ConfigError` names the known ones)."""
    return _registry(architecture).get(name)


def list_losses(architecture=None):
    """The loss names of `architecture`, or of every architecture when None, sorted."""
    if architecture is not None:
        return _registry(architecture).names()
    return sorted({name for registry in _REGISTRIES.values() for name in registry.names()})


def loss_settings(name, architecture="embedding"):
    """The keys of the config's `loss` section that the loss `name` reads."""
    return _registry(architecture).settings(name)
