"""bench/gpu.sh runs on a CPU too (quick, conv4 only) and writes the JSON a GPU run writes."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_script_runs_on_cpu_and_writes_both_results(tmp_path):
    env = dict(os.environ, OUT_DIR=str(tmp_path), PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(["bash", os.path.join(REPO, "bench", "gpu.sh")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    backbones = json.loads((tmp_path / "backbones_cpu_quick.json").read_text())
    sides = {run["side"] for run in backbones["runs"]}
    assert {"ours_float32", "ours_bfloat16"} <= sides
    assert all(run["images_per_sec_median"] > 0 for run in backbones["runs"])
    assert backbones["host"]["cpu"] and backbones["summary"][0]["network"] == "conv4_28"
    precision = json.loads((tmp_path / "precision_cpu_quick.json").read_text())
    assert {run["precision"] for run in precision["runs"]} == {"float32", "bfloat16", "float16"}
    assert set(precision["summary"][0]) >= {"float32_images_per_s", "bfloat16_over_float32", "float16_over_float32"}
