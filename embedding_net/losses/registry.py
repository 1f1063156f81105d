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

from embedding_net.registry import RegistryGroup

ARCHITECTURES = ("embedding", "siamese", "triplet")
_LOSSES = RegistryGroup(ARCHITECTURES, lambda architecture: f"loss of the {architecture} architecture",
                          "architecture")


def register_loss(name, architecture="embedding", settings=None, **info):
    """Registers a loss class as `name` for `architecture`; returns a decorator."""
    return _LOSSES[architecture].register(name, settings=settings, **info)


def get_loss(name, architecture="embedding"):
    """The loss class registered as `name` for `architecture` (a `ConfigError` names the known ones)."""
    return _LOSSES[architecture].get(name)


def list_losses(architecture=None):
    """The loss names of `architecture`, or of every architecture when None, sorted."""
    if architecture is not None:
        return _LOSSES[architecture].names()
    return sorted({name for architecture in ARCHITECTURES for name in _LOSSES[architecture].names()})


def loss_settings(name, architecture="embedding"):
    """The keys of the config's `loss` section that the loss `name` reads."""
    return _LOSSES[architecture].settings(name)


def loss_info(name, architecture="embedding"):
    """The notes registered with the loss `name` (e.g. `head`: "logits" or "cosines" for the
    losses that train class centres, and their `proxy_lr_multiplier`); {} when none."""
    return dict(_LOSSES[architecture].entry(name).info)
