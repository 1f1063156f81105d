"""Model architectures by name: `register_architecture`, `get_architecture`,
`list_architectures`. An architecture wraps the embedding model into the model that is trained:

- `embedding`: the embedding model itself, trained on P x K batches by an in-batch loss
  (mining kind `batch`).
- `siamese`: two inputs sharing the tower and a distance head (Koch et al. 2015), trained on
  pairs from a mining generator (mining kind `pairs`).
- `triplet`: three inputs sharing the tower, trained on triplets from a mining generator
  (mining kind `triplets`).

Each entry's `mining` says which kind of mining rule `loss.mining` names; its settings are the
config keys it reads besides the loss's (dotted keys belong to another section). Whatever the
architecture, only the embedding tower is saved.
"""

import keras

from embedding_net.models.layers import PairDistance
from embedding_net.registry import Registry

_ARCHITECTURES = Registry("architecture")


def register_architecture(name, settings=(), mining="batch", **info):
    """Registers a builder `(embedding_model, **settings) -> training model`; returns a decorator."""
    return _ARCHITECTURES.register(name, settings=settings, mining=mining, **info)


def get_architecture(name):
    """The builder registered as `name` (a `ConfigError` names the known ones)."""
    return _ARCHITECTURES.get(name)


def architecture_entry(name):
    """The registry entry of `name`: `settings` and `info["mining"]`."""
    return _ARCHITECTURES.entry(name)


def list_architectures():
    """The registered architecture names, sorted."""
    return _ARCHITECTURES.names()


@register_architecture("embedding")
def embedding_architecture(embedding_model):
    """The embedding model itself."""
    return embedding_model


@register_architecture("siamese", settings=("siamese_head", "data.batch_size"), mining="pairs",
                       head_losses={"euclidean": "contrastive", "l1": "binary_crossentropy"})
def build_siamese_model(embedding_model, head="euclidean", name="siamese_model"):
    """Two image inputs, one shared embedding tower, and a distance head (Koch et al. 2015).

    Pair label 1 = same class, everywhere in embedding_net.

    Args:
        embedding_model: the tower, e.g. from `build_embedding_model`; both inputs use it, so
            they share every weight.
        head: `euclidean`: the output [B, 1] is the distance between the two embeddings (train
            with `ContrastiveLoss`); `l1`: |e1 - e2| followed by a dense sigmoid, the output
            [B, 1] is the probability that the pair is of the same class (train with binary
            cross-entropy).
    """
    shape = embedding_model.input_shape[1:]
    first = keras.Input(shape, dtype="uint8", name="first_image")
    second = keras.Input(shape, dtype="uint8", name="second_image")
    output = PairDistance(head, name="pair_distance")(embedding_model(first), embedding_model(second))
    if head == "l1":
        output = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="same_class")(output)
    return keras.Model([first, second], output, name=name)


@register_architecture("triplet", settings=("data.batch_size",), mining="triplets")
def build_triplet_model(embedding_model, name="triplet_model"):
    """Three image inputs (anchor, positive, negative) sharing one embedding tower; the output
    [B, 3, D] stacks their embeddings, for losses on explicit triplets."""
    shape = embedding_model.input_shape[1:]
    inputs = [keras.Input(shape, dtype="uint8", name=f"{role}_image") for role in ("anchor", "positive", "negative")]
    embeddings = [embedding_model(x) for x in inputs]
    output = keras.layers.Concatenate(axis=1, name="stacked")(
        [keras.layers.Reshape((1, -1), name=f"{role}_row")(e) for role, e in zip(("anchor", "positive", "negative"), embeddings)])
    return keras.Model(inputs, output, name=name)
