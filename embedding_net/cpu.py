"""What the CPU is and which instructions it has, read from `/proc/cpuinfo` (Linux; empty or
None elsewhere). Free of TensorFlow, so the benchmark drivers share it with `training`."""

import platform

CPUINFO = "/proc/cpuinfo"


def _field(name, cpuinfo):
    """The value of the first `name : value` line of `cpuinfo`, or None."""
    try:
        with open(cpuinfo, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo=CPUINFO):
    """The set of the CPU's instruction flags (`avx512f`, `amx_bf16`, ...); empty where unknown."""
    return set((_field("flags", cpuinfo) or "").split())


def cpu_model(cpuinfo=CPUINFO):
    """The CPU's model name, e.g. `Intel(R) Xeon(R) Processor`; Python's guess where unknown."""
    return _field("model name", cpuinfo) or platform.processor() or "unknown CPU"
