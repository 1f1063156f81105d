"""embedding_net: image embeddings with Siamese and triplet networks in Keras 3."""

__version__ = "0.1.0"
