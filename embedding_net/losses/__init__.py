"""Losses, one family per file, each registered with `register_loss` for the architecture it trains.

    from embedding_net.losses.registry import get_loss, list_losses
    loss = get_loss("triplet")(margin=0.4, mining="semi_hard")   # called as loss(labels, embeddings)
"""

from embedding_net.losses.registry import ARCHITECTURES, get_loss, list_losses, loss_info, loss_settings, register_loss
from embedding_net.losses.arcface import ArcFace, build_arcface_model
from embedding_net.losses.circle import CircleLoss
from embedding_net.losses.contrastive import BatchContrastiveLoss, ContrastiveLoss
from embedding_net.losses.proxies import ClassCentres, CosFace, ProxyAnchorLoss, batch_loss, build_proxy_model
from embedding_net.losses.memory import CrossBatchMemory, MemoryModel, losses_with_memory
from embedding_net.losses.multi_similarity import MultiSimilarityLoss, multi_similarity_pairs
from embedding_net.losses.supcon import SupConLoss
from embedding_net.losses.triplet import TripletLoss, TripletMarginLoss, triplet_loss

__all__ = ["ARCHITECTURES", "ArcFace", "BatchContrastiveLoss", "CircleLoss", "ClassCentres", "ContrastiveLoss", "CosFace", "CrossBatchMemory",
           "MemoryModel", "MultiSimilarityLoss", "ProxyAnchorLoss", "SupConLoss", "TripletLoss", "TripletMarginLoss", "batch_loss", "build_arcface_model",
           "build_proxy_model", "get_loss", "list_losses", "loss_info", "losses_with_memory",
           "loss_settings", "multi_similarity_pairs", "register_loss", "triplet_loss"]
