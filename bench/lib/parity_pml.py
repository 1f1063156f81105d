"""The peer's side of `bench/parity.py`, run in the peer's environment (torch and
pytorch-metric-learning, see ../shared/bench/README.md), never with TensorFlow:

    ../.venv-peer/bin/python bench/lib/parity_pml.py CASES.json

CASES.json lists the cases `{"name", "pml", "inputs"}`: `inputs` is an .npz of `labels` [B],
`embeddings` [B, D] and, for the losses with class centres, `weights` [D, C * sub_centers]
(PML's `W` layout; Proxy Anchor's proxies are its transpose). For every case this writes next
to the inputs `<inputs>.pml.npz` with `value` and `gradient` (d value / d embeddings) in
float64 and in float32, with PML's default reducer of each loss, and `centres` (d value / d
weights, in the same layout) where the loss has class centres.
"""

import json
import sys

import numpy as np
import torch
from pytorch_metric_learning import distances, losses, miners


def build(spec, num_classes, embedding_size):
    """The PML loss (and miner or None) of a case's `pml` spec."""
    kind, options = spec["loss"], dict(spec.get("options", {}))
    if options.pop("unnormalised_lp", False):  # our euclidean distances take the embeddings as they are
        options["distance"] = distances.LpDistance(normalize_embeddings=False)
    if kind in ("ProxyAnchorLoss", "CosFaceLoss", "ArcFaceLoss", "SubCenterArcFaceLoss"):
        options.update(num_classes=num_classes, embedding_size=embedding_size)
    loss = getattr(losses, kind)(**options)
    miner = None
    if "miner" in spec:
        miner_options = dict(spec.get("miner_options", {}))
        if miner_options.pop("unnormalised_lp", False):
            miner_options["distance"] = distances.LpDistance(normalize_embeddings=False)
        miner = getattr(miners, spec["miner"])(**miner_options)
    if "reducer" in spec:
        from pytorch_metric_learning import reducers

        loss.reducer = getattr(reducers, spec["reducer"])()
    return loss, miner


def run(spec, arrays, dtype):
    labels = torch.as_tensor(arrays["labels"].astype(np.int64))
    embeddings = torch.tensor(arrays["embeddings"], dtype=dtype, requires_grad=True)
    num_classes = int(arrays["num_classes"])
    loss, miner = build(spec, num_classes, embeddings.shape[1])
    loss = loss.to(dtype)
    if "weights" in arrays:
        weights = torch.as_tensor(arrays["weights"], dtype=dtype)
        with torch.no_grad():
            if spec["loss"] == "ProxyAnchorLoss":
                loss.proxies.copy_(weights.T)
            else:
                loss.W.copy_(weights)
    indices = miner(embeddings, labels) if miner is not None else None
    value = loss(embeddings, labels, indices) if indices is not None else loss(embeddings, labels)
    value.backward()
    centres = None
    if "weights" in arrays:  # the gradient of the centres, in the saved layout [D, C * sub_centers]
        centres = (loss.proxies.grad.T if spec["loss"] == "ProxyAnchorLoss" else loss.W.grad).detach().double().numpy()
    return float(value.detach()), embeddings.grad.detach().double().numpy(), centres


def main(cases_path):
    with open(cases_path) as handle:
        cases = json.load(handle)
    for case in cases:
        with np.load(case["inputs"], allow_pickle=False) as data:
            arrays = dict(data)
        result = {}
        for suffix, dtype in (("64", torch.float64), ("32", torch.float32)):
            value, gradient, centres = run(case["pml"], arrays, dtype)
            result[f"value{suffix}"], result[f"gradient{suffix}"] = np.float64(value), gradient
            if centres is not None:
                result[f"centres{suffix}"] = centres
        np.savez(case["inputs"][:-4] + ".pml.npz", **result)
    import pytorch_metric_learning

    print(json.dumps({"torch": torch.__version__, "pytorch_metric_learning": pytorch_metric_learning.__version__}))


if __name__ == "__main__":
    main(sys.argv[1])
