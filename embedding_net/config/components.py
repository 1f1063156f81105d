"""Which keys of a config apply: each chosen component owns its settings.

A family of components is chosen by one key (the loss by `loss.name` within
`model.architecture`, the optimizer by `train.optimizer`, the learning-rate schedule by
`train.lr_schedule`, the architecture by `model.architecture`). Every key that some member of
a family reads belongs to that family; a key the user sets must then be read by the member
chosen, or the config is refused with one line naming the key, the component and what it
takes: "loss.scale is not a setting of the triplet loss; it takes: margin, mining, ...".
Keys that no family owns (`train.epochs`, `data.root`, ...) apply to every run.

Keys that moved, and values that were renamed, are reported here too: a moved key fails with
the place it went to; a renamed value is accepted with a warning (`ConfigWarning`).
"""

import typing
import warnings

from embedding_net.errors import ConfigError


def _registries():
    """The registries of the components: the catalogue file while the commands check a config
    before importing TensorFlow (`catalogue.catalogue_registries`), else the live ones."""
    from embedding_net.config.catalogue import active_catalogue, as_registries

    catalogue = active_catalogue()
    return live_registries() if catalogue is None else as_registries(catalogue)


def live_registries():
    """The registry modules (imported here, not at the top: registering a loss or a mining rule
    imports Keras, and a config's own mistakes must surface before that)."""
    import embedding_net.losses as losses
    import embedding_net.mining as mining
    import embedding_net.models.architectures as architectures
    import embedding_net.optim as optim

    return losses, mining, architectures, optim


class ConfigWarning(UserWarning):
    """A config that works but uses an old spelling; the message says the new one."""


class Family(typing.NamedTuple):
    section: str                 # where bare setting names live
    describe: typing.Callable    # raw config -> "the triplet loss"
    chosen: typing.Callable      # raw config -> settings of the chosen member
    members: typing.Callable     # () -> settings of every member, for ownership


def _value(raw, section, key, default):
    value = raw.get(section, {}).get(key, default)
    return default if value is None and default is not None else value


def _architecture(raw):
    return _value(raw, "model", "architecture", "embedding")


def _loss_name(raw):
    return _value(raw, "loss", "name", "triplet")


def loss_settings(name, architecture):
    return _registries()[0].loss_settings(name, architecture)


def architecture_entry(name):
    return _registries()[2].architecture_entry(name)


def _describe_loss(raw):
    architecture = _architecture(raw)
    suffix = "" if architecture == "embedding" else f" of the {architecture} architecture"
    return f"the {_loss_name(raw)} loss{suffix}"


def _every_loss():
    losses = _registries()[0]
    return [losses.loss_settings(n, a) for a in losses.ARCHITECTURES for n in losses.list_losses(a)]


def _optim():
    return _registries()[3]


FAMILIES = (
    Family("loss", _describe_loss, lambda raw: loss_settings(_loss_name(raw), _architecture(raw)), _every_loss),
    Family("train", lambda raw: f"the {_value(raw, 'train', 'optimizer', 'adam')} optimizer",
           lambda raw: _optim().optimizer_settings(_value(raw, "train", "optimizer", "adam")),
           lambda: [_optim().optimizer_settings(n) for n in _optim().list_optimizers()]),
    Family("train", lambda raw: f"the {_value(raw, 'train', 'lr_schedule', 'cosine')} learning-rate schedule",
           lambda raw: _optim().schedule_settings(_value(raw, "train", "lr_schedule", "cosine")),
           lambda: [_optim().schedule_settings(n) for n in _optim().list_schedules()]),
    Family("model", lambda raw: f"the {_architecture(raw)} architecture",
           lambda raw: architecture_entry(_architecture(raw)).settings,
           lambda: [architecture_entry(n).settings for n in _registries()[2].list_architectures()]),
)

# Keys that a component takes but that apply to every run: the evaluation of every run measures
# with `loss.distance`, whatever the loss (ArcFace's logits are cosines; its embeddings are
# still compared by the distance named here).
SHARED_KEYS = frozenset({"loss.distance"})

# Keys of earlier versions -> where they went (and what to write there).
MOVED_KEYS = {
    "loss.negatives_selection_mode": "loss.mining (random, hard, random_hard or semi_hard for the triplet architecture)",
    "loss.pair_mining": "loss.mining (random or hard for the siamese architecture)",
}
# Values of earlier versions -> their names now.
RENAMED_VALUES = {"loss.mining": {"semihard": "semi_hard", "hardest": "hard"}}


def _full(section, key):
    return key if "." in key else f"{section}.{key}"


def check_moved_keys(raw):
    """Fails on a key that moved; renames old values in place, with a `ConfigWarning`."""
    for section, values in raw.items():
        for key in list(values) if isinstance(values, dict) else ():
            full = f"{section}.{key}"
            if full in MOVED_KEYS:
                raise ConfigError(f"{full} has moved to {MOVED_KEYS[full]}")
            renamed = RENAMED_VALUES.get(full, {})
            if isinstance(values[key], str) and values[key] in renamed:
                new = renamed[values[key]]
                warnings.warn(f"{full}: {values[key]} is now called {new}; write {full}: {new}",
                              ConfigWarning, stacklevel=3)
                values[key] = new


def check_components(raw):
    """Refuses keys of `raw` (the parsed YAML and overrides) that the chosen components do not
    read, and a loss or mining rule that the chosen architecture does not train with."""
    losses, mining_rules, architectures, _ = _registries()
    architecture = _architecture(raw)
    if architecture in architectures.list_architectures():
        names = losses.list_losses(architecture)
        if _loss_name(raw) not in names:
            raise ConfigError(f"loss.name of model.architecture {architecture} must be one of "
                              f"{', '.join(names)}, received: {_loss_name(raw)!r}")
        mining = raw.get("loss", {}).get("mining")
        kind = architecture_entry(architecture).info["mining"]
        if mining is not None and mining not in mining_rules.list_minings(kind):
            raise ConfigError(f"loss.mining of model.architecture {architecture} must be one of "
                              f"{', '.join(mining_rules.list_minings(kind))}, received: {mining!r}")
    for family in FAMILIES:
        owned = {_full(family.section, key) for settings in family.members() for key in settings} - SHARED_KEYS
        chosen = {_full(family.section, key) for key in family.chosen(raw)}
        for section, values in raw.items():
            for key in values if isinstance(values, dict) else ():
                full = f"{section}.{key}"
                # null is every setting's "not set", so `--set loss.mining=null` drops a base config's key.
                if (full in owned and values[key] is not None and full not in chosen
                        and not _chosen_elsewhere(raw, family, full)):
                    takes = ", ".join(sorted(key.removeprefix(f"{section}.") for key in chosen)) or "no settings"
                    raise ConfigError(f"{full} is not a setting of {family.describe(raw)}; it takes: {takes}")


def _chosen_elsewhere(raw, family, full):
    """Whether another family that owns `full` has chosen a member that reads it."""
    return any(full in {_full(other.section, key) for key in other.chosen(raw)}
               for other in FAMILIES if other is not family)


def applies(raw, full_key):
    """Whether `full_key` applies to the components chosen in `raw` (the key is either owned by
    no family, or read by a chosen member of a family that owns it)."""
    if full_key in SHARED_KEYS:
        return True
    owners = [family for family in FAMILIES
              if full_key in {_full(family.section, key) for settings in family.members() for key in settings}]
    return not owners or any(full_key in {_full(f.section, key) for key in f.chosen(raw)} for f in owners)
