"""`train.mixed_precision: auto`: the CPU's bfloat16 flags decide, and the run says so."""

import os

import numpy as np
import pytest
import yaml

from helpers import tiny_overrides
from embedding_net.config.loading import load_config
from embedding_net.training import precision
from embedding_net.training import runner as training

CPUINFO = ("processor\t: 0\nmodel name\t: Test CPU 9000\n"
           "flags\t\t: fpu sse avx512f {extra} avx2\n")


@pytest.mark.parametrize("extra,expected", [
    ("amx_bf16 amx_tile avx512_bf16", ["amx_bf16", "avx512_bf16"]),
    ("avx512_bf16", ["avx512_bf16"]),
    ("amx_tile avx512_fp16", []),
])
def test_cpu_flags_read_from_cpuinfo(tmp_path, extra, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(extra=extra))
    assert precision.cpu_bfloat16_flags(str(path)) == expected
    assert precision.cpu_model(str(path)) == "Test CPU 9000"


def test_missing_cpuinfo_means_no_flags(tmp_path):
    assert precision.cpu_bfloat16_flags(str(tmp_path / "absent")) == []


@pytest.mark.parametrize("setting,gpus,flags,expected", [
    ("auto", [], ["amx_bf16"], "bfloat16"),
    ("auto", [], [], "none"),
    ("auto", ["NVIDIA H100"], ["amx_bf16"], "none"),
    ("none", [], ["amx_bf16"], "none"),
    ("float16", [], [], "float16"),
])
def test_resolution(setting, gpus, flags, expected):
    resolved, reason = precision.resolve_mixed_precision(setting, gpus, flags)
    assert resolved == expected
    assert ("auto" in reason) == (setting == "auto")


def test_device_line_names_device_and_precision():
    line = precision.device_line("bfloat16", "auto: the CPU has amx_bf16", [])
    assert line.startswith("training on CPU, ") and "mixed bfloat16 (auto: the CPU has amx_bf16)" in line
    assert "2 GPUs (A, B), 2 replicas in float32" in precision.device_line("none", "x", ["A", "B"], 2)


@pytest.mark.parametrize("flags,expected", [(["amx_bf16"], "bfloat16"), ([], "none")])
def test_auto_run_trains_in_the_resolved_precision_and_records_it(omniglot_subset, tmp_path, monkeypatch, capsys,
                                                                   flags, expected):
    monkeypatch.setattr(training, "cpu_bfloat16_flags", lambda: flags)
    config = load_config(None, tiny_overrides(omniglot_subset, tmp_path) + ["train.mixed_precision=auto",
                                                                            "train.epochs=1", "train.verbose=2"])
    metrics = training.run(config)
    assert np.isfinite(metrics["top1_accuracy"])
    with open(os.path.join(config.run_dir, "config.yml")) as handle:
        assert yaml.safe_load(handle)["train"]["mixed_precision"] == expected
    assert f"in {'float32' if expected == 'none' else 'mixed ' + expected} (auto: " in capsys.readouterr().out
