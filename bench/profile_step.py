"""Where one training step goes: TensorFlow's profiler over a few `model.fit` steps, each op's
time summed by kind (convolution kernels, matrix products, batch normalisation, the optimizer's
update, other elementwise ops, the input pipeline), against the step's wall time on all cores.

    python bench/profile_step.py                               # ResNet18 64 px, float32 and bfloat16
    python bench/profile_step.py --network conv4 --precisions float32

The remainder (wall time x cores - ops' time) is what no op accounts for: the executor's
scheduling, Python and Keras between steps, and cores left idle. Each precision runs in its own
process; the profile covers --steps steps after --warmup untimed ones. Reads the profiler's
XPlane file with the protobuf module TensorFlow ships. Writes bench/results/profile_step.json.
"""

import argparse
import collections
import glob
import os
import sys
import tempfile
import time

import lib
from precision import cpu_flags
from backbones import NETWORKS, POLICIES

NAME = "profile_step"
# Op kinds by the TensorFlow op type (after the last ':' of an event's name), first match wins.
KINDS = [("convolution", ("Conv2D", "Conv2DBackprop", "PadWithConv2D")), ("matrix product", ("MatMul", "BatchMatMul")),
         ("optimizer update", ("ResourceApplyAdam", "AssignSubVariableOp", "AssignAddVariableOp")),
         ("pooling", ("MaxPool", "AvgPool")), ("cast", ("Cast",)),
         ("copies and slices", ("Slice", "StridedSlice", "Pad", "ConcatV2", "Tile", "Transpose", "GatherV2"))]


def kind_of(scope, op):
    if any(stage in scope for stage in ("/bn", "_bn", "batch_normalization")) and "Conv" not in op:
        return "batch normalisation"
    for kind, markers in KINDS:
        if any(marker in op for marker in markers):
            return kind
    return "other elementwise and reductions"


def busy_seconds(events):
    """Seconds covered by the union of the events' intervals."""
    total, end = 0, None
    for begin, finish in sorted((e.offset_ps, e.offset_ps + e.duration_ps) for e in events):
        if end is None or begin > end:
            total, end = total + finish - begin, finish
        elif finish > end:
            total, end = total + finish - end, finish
    return total * 1e-12


def worker(a):
    import embedding_net  # noqa: F401  (before TensorFlow: sets TF_ENABLE_ONEDNN_OPTS)
    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from embedding_net.data.sampling import pk_dataset
    from embedding_net.losses import TripletLoss
    from embedding_net.models import build_embedding_model
    from embedding_net.optim import build_optimizer

    backbone, side, channels, p, k, _, _ = NETWORKS[a.network_key]
    keras.mixed_precision.set_dtype_policy(POLICIES[a.precision])
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4 * p), 8).astype("int32")
    images = rng.integers(0, 256, (len(labels), side, side, channels), dtype=np.uint8)
    model = build_embedding_model(backbone, (side, side, channels), 64)
    model.compile(optimizer=build_optimizer("adam", 1e-4), loss=TripletLoss(0.2, "semi_hard"))
    dataset = pk_dataset(labels, 4 * p, p, k, images=images, seed=0)
    model.fit(dataset, epochs=1, steps_per_epoch=a.warmup, verbose=0)
    folder = tempfile.mkdtemp(prefix="profile_step_")
    tf.profiler.experimental.start(folder)
    started = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=a.steps, verbose=0)
    wall = (time.perf_counter() - started) / a.steps
    tf.profiler.experimental.stop()
    space = xplane_pb2.XSpace()
    with open(glob.glob(os.path.join(folder, "**", "*.xplane.pb"), recursive=True)[-1], "rb") as handle:
        space.ParseFromString(handle.read())
    plane = next(plane for plane in space.planes if plane.name == "/host:CPU")
    names = {key: value.name for key, value in plane.event_metadata.items()}
    seconds = collections.Counter()
    for line in plane.lines:
        if line.name.startswith("tf_data"):  # nested iterator events: the busy time of their union
            seconds["input pipeline"] += busy_seconds(line.events)
        elif line.name.startswith("tf_Compute"):
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if "::" in name:
                    continue  # the executor's containers of the ops, not ops
                scope, _, op = name.rpartition(":")
                seconds[kind_of(scope, op)] += event.duration_ps * 1e-12
    cores = os.cpu_count()
    per_step = {kind: 1000 * value / a.steps for kind, value in seconds.most_common()}
    per_step["unaccounted (scheduling, Python, idle cores)"] = max(0.0, 1000 * wall * cores - sum(per_step.values()))
    lib.worker_reply({"network": a.network_key, "precision": a.precision, "step_ms": 1000 * wall, "cores": cores,
                      "core_ms_per_step": {key: round(value, 2) for key, value in per_step.items()}})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", dest="network_key", choices=sorted(NETWORKS), default="resnet18_64")
    ap.add_argument("--precisions", nargs="+", choices=sorted(POLICIES), default=["float32", "bfloat16"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", help=argparse.SUPPRESS)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a._worker:
        return worker(a)
    if a.quick:
        a.steps, a.warmup = 2, 2
    started, profiles = time.perf_counter(), []
    for precision in a.precisions:
        cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "1", "--network", a.network_key, "--precision",
               precision, "--steps", str(a.steps), "--warmup", str(a.warmup)]
        rc, _, err, _, other, reply = lib.run_subprocess(cmd, timeout=1800)
        if rc or not reply:
            raise SystemExit(f"[profile_step] {precision} failed: {err[-2000:]}")
        reply["other_cores"] = other
        profiles.append(reply)
    kinds = list(dict.fromkeys(kind for p in profiles for kind in p["core_ms_per_step"]))
    rows = [[kind] + [f"{lib.fmt(p['core_ms_per_step'].get(kind, 0.0))} "
                      f"({p['core_ms_per_step'].get(kind, 0.0) / (p['step_ms'] * p['cores']):.0%})" for p in profiles]
            for kind in kinds]
    rows.append(["step wall time (ms)"] + [lib.fmt(p["step_ms"]) for p in profiles])
    lib.print_table(f"{a.network_key}: core-milliseconds per step by op kind (share of wall x cores)",
                    ["op kind"] + [p["precision"] for p in profiles], rows)
    lib.finish(NAME, a, {"kind": NAME, "network": a.network_key, "cpu_bf16_flags": cpu_flags(),
                                "profiles": profiles}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
