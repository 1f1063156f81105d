"""Models: backbones by name, the embedding model (raw uint8 images in, unit embeddings out),
the serialisable layers that keep it self-contained, and the architectures that wrap it for
training (Siamese, triplet).

    from embedding_net.models import build_embedding_model, list_backbones
    model = build_embedding_model("resnet18", input_shape=(64, 64, 3), embedding_size=128)

Importing this package registers every custom layer with Keras; so does a plain `import
embedding_net` (`embedding_net/registration.py`), as soon as Keras is loaded. Then
`keras.saving.load_model` of a `model.keras` works (or use `load_embedding_model`).
"""

from embedding_net.models.architectures import (
    build_siamese_model, build_triplet_model, get_architecture, list_architectures, register_architecture)
from embedding_net.models.backbones import build_backbone, get_backbone, list_backbones, register_backbone
from embedding_net.models.builders import POOLINGS, build_embedding_model, load_embedding_model
from embedding_net.models.layers import (
    GeneralizedMeanPooling, ImagePreprocessing, L2Normalization, PairDistance, TokenPooling)
from embedding_net.models.normalization import BatchNormalization
# Registers the keras-hub backbones (dinov2_small, ...); keras-hub itself is imported only to build one.
from embedding_net.models import hub  # noqa: F401

__all__ = ["BatchNormalization", "GeneralizedMeanPooling", "ImagePreprocessing", "L2Normalization", "POOLINGS",
           "PairDistance", "TokenPooling", "build_backbone", "build_embedding_model", "build_siamese_model",
           "build_triplet_model", "get_architecture", "get_backbone", "list_architectures", "list_backbones",
           "load_embedding_model", "register_architecture", "register_backbone"]
