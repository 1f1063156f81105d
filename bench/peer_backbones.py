"""The peer's side of bench/backbones.py, run with the peer's Python (torch, pytorch-metric-learning):
one network trained for --steps steps and embedded at --embed-batch, in float32, exactly as
`../shared/bench/peer_pml.py` trains (PML's TripletMarginLoss + TripletMarginMiner on
L2-normalised embeddings, Adam, whole-step wall time) but on random uint8 images of P x K
labels, like our side, so that any input size runs without decoding a dataset.

conv4 and ResNet18 come from peer_pml.py itself (`build_model`; ResNet18 with the ImageNet
stem). peer_pml.py has no ResNet50: it is written here, torchvision's `resnet50` layer for
layer (Bottleneck blocks [3, 4, 6, 3], stride on the 3x3 convolution, Kaiming fan-out
initialisation), without the classifier: global average pool -> Linear(embedding).

The last line printed is one JSON object.
"""

import argparse
import importlib.util
import json
import os
import time

import numpy as np


def resnet50(in_channels, embedding):
    import torch.nn as nn

    class Bottleneck(nn.Module):
        def __init__(self, inputs, width, stride):
            super().__init__()
            outputs = 4 * width
            self.body = nn.Sequential(
                nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, outputs, 1, bias=False), nn.BatchNorm2d(outputs))
            self.down = None
            if stride != 1 or inputs != outputs:
                self.down = nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + (x if self.down is None else self.down(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            layers, channels = [nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)], 64
            for blocks, width, stride in ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)):
                for block in range(blocks):
                    layers.append(Bottleneck(channels, width, stride if block == 0 else 1))
                    channels = 4 * width
            self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(channels, embedding)
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            return self.head(self.features(x))

    return ResNet50()


def load_peer(path):
    """peer_pml.py as a module: its `build_model` and its CPU accounting (`cpu_snapshot`,
    `other_cpu_load`), so both scripts build and measure the peer the same way."""
    spec = importlib.util.spec_from_file_location("peer_pml", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    return peer


def build(a, peer):
    if a.network == "resnet50":
        return resnet50(a.channels, a.embedding)
    return peer.build_model(a.network, a.channels, a.embedding, "imagenet", a.size)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", choices=["conv4", "resnet18", "resnet50"], required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--classes-per-batch", type=int, required=True)
    ap.add_argument("--images-per-class", type=int, default=4)
    ap.add_argument("--embedding", type=int, default=64)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--embed-batch", type=int, default=256)
    ap.add_argument("--embed-repeats", type=int, default=0, help="0: no embedding throughput")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peer-script", required=True)
    a = ap.parse_args()

    import torch
    from pytorch_metric_learning import losses, miners

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    classes, batch = 4 * a.classes_per_batch, a.classes_per_batch * a.images_per_class
    images = torch.from_numpy(rng.integers(0, 256, (classes * 8, a.channels, a.size, a.size), dtype=np.uint8))
    labels = torch.from_numpy(np.repeat(np.arange(classes), 8))
    peer = load_peer(a.peer_script)
    model = build(a, peer)
    loss_fn, miner = losses.TripletMarginLoss(margin=0.2), miners.TripletMarginMiner(margin=0.2,
                                                                                      type_of_triplets="semihard")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    seconds, start = [], None
    for step in range(a.steps):
        if step == a.warmup:
            start = peer.cpu_snapshot()
        began = time.perf_counter()
        chosen = rng.choice(classes, a.classes_per_batch, replace=False)
        index = torch.from_numpy(np.concatenate([c * 8 + rng.choice(8, a.images_per_class, replace=False)
                                                 for c in chosen]))
        x = images[index].float() / 255.0  # the peer's inputs are floats in [0, 1]
        embeddings = model(x)
        loss = loss_fn(embeddings, labels[index], miner(embeddings, labels[index]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        seconds.append(time.perf_counter() - began)
    timed = seconds[a.warmup:]
    result = {"side": "peer", "median_ms": round(1000 * float(np.median(timed)), 3),
              "images_per_sec_median": round(batch / float(np.median(timed)), 2), "timed_steps": len(timed),
              "other_procs_cpu_cores": peer.other_cpu_load(start, peer.cpu_snapshot()),
              "params": sum(p.numel() for p in model.parameters()),
              "versions": {"torch": torch.__version__}}
    if a.embed_repeats:
        model.eval()
        x = images[:a.embed_batch].float() / 255.0
        times = []
        with torch.no_grad():
            for repeat in range(a.embed_repeats + 1):
                began = time.perf_counter()
                torch.nn.functional.normalize(model(x), dim=1).numpy()
                times.append(time.perf_counter() - began)
        result["embed_images_per_sec"] = round(a.embed_batch / float(np.median(times[1:])), 1)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
