"""`train.mixed_precision: auto` and the one line that says what trains: device and precision.

`auto` computes in bfloat16 on a CPU with bfloat16 instructions (AMX-BF16 on Xeons since Sapphire
Rapids, AVX512-BF16 on AMD Zen 4 and later Xeons), where oneDNN runs the convolutions and matrix
products natively in it, and in float32 elsewhere. On such a CPU (a 2-core Xeon with AMX),
ResNet18 trained 1.2-1.8x faster in bfloat16 at 64 px and 2.0x at 112 px, ResNet50 1.2x at
224 px (`bench/backbones.py`); conv4 on Omniglot 1.39x, with a MAP@R lower by 0.007 at equal
steps (`bench/modes.py`), which is why `none` stays the default. With a GPU, `auto` stays
float32: choose `float16` or `bfloat16` for the GPU yourself.
"""

import os

from embedding_net.cpu import CPUINFO, cpu_flags, cpu_model

BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bfloat16_flags(cpuinfo=CPUINFO):
    """The CPU's bfloat16 instruction flags among `BFLOAT16_FLAGS` (none where unknown)."""
    present = cpu_flags(cpuinfo)
    return [flag for flag in BFLOAT16_FLAGS if flag in present]


def resolve_mixed_precision(setting, gpu_names, bfloat16_flags):
    """`(precision, reason)`: the `train.mixed_precision` value to train with, and why.

    Args:
        setting: the config's value, `auto`, `none`, `float16` or `bfloat16`.
        gpu_names: the GPUs training will use (empty on a CPU).
        bfloat16_flags: the CPU's flags from `cpu_bfloat16_flags()`.
    """
    if setting != "auto":
        return setting, "train.mixed_precision"
    if gpu_names:
        return "none", "auto: float32 on a GPU (set float16 or bfloat16 for it)"
    if bfloat16_flags:
        return "bfloat16", f"auto: the CPU has {', '.join(bfloat16_flags)}"
    return "none", "auto: the CPU has no bfloat16 instructions"


def gpu_names():
    """The names of the GPUs TensorFlow sees (empty on a CPU-only machine)."""
    import tensorflow as tf

    devices = tf.config.list_physical_devices("GPU")
    return [tf.config.experimental.get_device_details(d).get("device_name", d.name) for d in devices]


def device_line(precision, reason, gpu_names, replicas=1):
    """One line: where training runs and in which precision."""
    if gpu_names:
        where = f"{len(gpu_names)} GPU{'s' if len(gpu_names) > 1 else ''} ({', '.join(sorted(set(gpu_names)))})"
    else:
        where = f"CPU, {os.cpu_count()} cores ({cpu_model()})"
    if replicas > 1:
        where += f", {replicas} replicas"
    name = "float32" if precision == "none" else f"mixed {precision}"
    return f"training on {where} in {name} ({reason})"
