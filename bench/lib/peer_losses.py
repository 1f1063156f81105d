"""The peer's side of `bench/losses.py`: `../shared/bench/peer_pml.py` exactly as it trains and
evaluates, with one of pytorch-metric-learning's losses in place of its triplet loss. Run with
the peer's Python:

    ../.venv-peer/bin/python bench/lib/peer_losses.py --loss supcon -- --omniglot D --steps 3000

peer_pml.py builds `losses.TripletMarginLoss(...)` and `miners.TripletMarginMiner(...)` and calls
`loss(embeddings, labels, miner(embeddings, labels))`; this replaces those two names, before its
`main` runs, with the chosen loss (PML's defaults, the same as our configs') and its miner, or
a miner that selects nothing (None: the loss takes every pair). The proxies of Proxy Anchor,
CosFace and ArcFace join the optimizer as a second parameter group at their learning-rate
multiplier (Proxy Anchor 100, as its paper and ours; CosFace and ArcFace 10, as our configs).
Prints peer_pml.py's JSON (its `loss` and `miner` fields still say triplet: the line starting
[peer_losses] says what ran).
"""

import argparse
import importlib.util
import math
import os
import sys

PEER_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "shared", "bench", "peer_pml.py")

# name -> (PML loss class, its options, miner class and options or None, proxy lr multiplier),
# the settings of our configs/omniglot_<name>.yml
LOSSES = {
    "multi_similarity": ("MultiSimilarityLoss", {"alpha": 2.0, "beta": 50.0, "base": 0.5}, None, None),
    "supcon": ("SupConLoss", {"temperature": 0.05}, None, None),
    "circle": ("CircleLoss", {"m": 0.4, "gamma": 80.0}, None, None),
    "proxy_anchor": ("ProxyAnchorLoss", {"margin": 0.1, "alpha": 32.0}, None, 100.0),
    "cosface": ("CosFaceLoss", {"margin": 0.1, "scale": 16.0}, None, 10.0),  # configs/omniglot_cosface.yml's
    "arcface": ("ArcFaceLoss", {"margin": math.degrees(0.1), "scale": 16.0}, None, 10.0),  # omniglot_arcface.yml's
}


class NoMiner:
    """Selects nothing: the loss then takes every pair of the batch."""

    num_triplets = 0

    def __call__(self, embeddings, labels):
        return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", choices=sorted(LOSSES), required=True)
    parser.add_argument("--peer-script", default=PEER_SCRIPT)
    parser.add_argument("peer_args", nargs=argparse.REMAINDER, help="after --: peer_pml.py's arguments")
    args = parser.parse_args()
    peer_args = [a for a in args.peer_args if a != "--"]

    import torch
    from pytorch_metric_learning import losses, miners

    spec = importlib.util.spec_from_file_location("peer_pml", args.peer_script)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    loss_name, options, miner, multiplier = LOSSES[args.loss]
    embedding = int(peer_args[peer_args.index("--embedding") + 1]) if "--embedding" in peer_args else 64
    seen = {}

    load_omniglot = peer.load_omniglot

    def counting_load(*arguments, **keywords):
        loaded = load_omniglot(*arguments, **keywords)
        seen["classes"] = loaded[-1]["n_train_classes"]
        return loaded

    def make_loss(**_):
        extra = {}
        if multiplier is not None:
            extra = {"num_classes": seen["classes"], "embedding_size": embedding}
        seen["loss"] = getattr(losses, loss_name)(**options, **extra)
        return seen["loss"]

    def make_miner(**_):
        return getattr(miners, miner[0])(**miner[1]) if miner else NoMiner()

    adam = torch.optim.Adam

    def adam_with_proxies(parameters, lr, **keywords):
        groups = [{"params": list(parameters), "lr": lr}]
        if multiplier is not None:
            groups.append({"params": list(seen["loss"].parameters()), "lr": lr * multiplier})
        return adam(groups, lr=lr, **keywords)

    peer.load_omniglot = counting_load
    losses.TripletMarginLoss, miners.TripletMarginMiner = make_loss, make_miner
    torch.optim.Adam = adam_with_proxies
    print(f"[peer_losses] {loss_name}{options} miner={miner} proxy_lr_multiplier={multiplier}", flush=True)
    sys.exit(peer.main(peer_args + ["--loss", "triplet"]))


if __name__ == "__main__":
    main()
