"""The mining rules by name: `register_mining`, `get_mining`, `list_minings`.

Three kinds of rule, each with its own names:

- `batch`: which triplets of a P x K batch an in-batch loss sums (`TripletLoss`'s `mining`):
  `all`, `hard`, `semi_hard`; see `embedding_net.mining.triplet_sums`.
- `triplets`: which negative a triplet generator gives every anchor-positive pair of its draw
  (`TripletGenerator`'s `mining`): `random`, `hard`, `random_hard`, `semi_hard`; see
  `embedding_net.mining.selection`.
- `pairs`: which pairs a pair generator puts in a batch (`PairGenerator`'s `mining`): `random`,
  `hard`; see `embedding_net.mining.selection`.

The same name means the same idea in each kind: `hard` takes the nearest negatives (and, where
the rule picks positives too, the farthest positives), `semi_hard` the nearest negatives
farther than the positive (FaceNet, Schroff et al. 2015).
"""

from embedding_net.registry import RegistryGroup

KINDS = ("batch", "triplets", "pairs")
_MININGS = RegistryGroup(KINDS, lambda kind: f"{kind} mining", "kind of mining")


def register_mining(name, kind="batch", **info):
    """Registers a rule of `kind` as `name`; returns a decorator."""
    return _MININGS[kind].register(name, settings=(), **info)


def get_mining(name, kind="batch"):
    """The rule registered as `name` for `kind` (a `ConfigError` names the known ones)."""
    return _MININGS[kind].get(name)


def mining_entry(name, kind="batch"):
    """The registry entry of `name` (its `info` says how the rule is called)."""
    return _MININGS[kind].entry(name)


def list_minings(kind="batch"):
    """The rule names of `kind`, sorted."""
    return _MININGS[kind].names()


def check_mining(mining, kind="batch"):
    """Raises a `ValueError` echoing `mining` unless it names a rule of `kind`."""
    if mining not in _MININGS[kind]:
        raise ValueError(f"`mining` must be one of {', '.join(list_minings(kind))}. Received: {mining!r}")
