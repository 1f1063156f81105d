"""Mining: B x B distances in `keras.ops`, the rules that select pairs and triplets from them as
masked reductions, batch-all without the B^3 tensor, and the training metrics that watch them.

    from embedding_net.mining.registry import list_minings
    from embedding_net.mining.distances import pairwise_distances
    list_minings("batch")   # ['all', 'hard', 'semi_hard']
"""

from embedding_net.mining.distances import pairwise_distances
from embedding_net.mining.registry import KINDS, check_mining, get_mining, list_minings, register_mining
from embedding_net.mining import rules, selection, triplet_sums  # noqa: F401  (registers the rules)

__all__ = ["KINDS", "check_mining", "get_mining", "list_minings", "pairwise_distances", "register_mining"]
