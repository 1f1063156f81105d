#!/usr/bin/env bash
# Training throughput and half-precision comparisons for the day a GPU machine is available:
# bench/backbones.py (ours float32 and bfloat16, and the peer where its venv exists) and
# bench/precision.py (float32, bfloat16, float16), writing the same JSON as on CPUs, as
# bench/results/backbones_gpu.json and precision_gpu.json. About 6 minutes on one GPU.
#
#     bash bench/gpu.sh                      # on the GPU machine, from anywhere
#     OUT_DIR=/tmp/r PYTHON=.venv/bin/python bash bench/gpu.sh
#
# Without a GPU it runs the same two benchmarks with --quick (a few steps) on conv4 only, into
# *_cpu_quick.json: the test suite runs it so (tests/test_bench_gpu.py), so the script cannot
# rot while no GPU is lent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-bench/results}
mkdir -p "$OUT_DIR"

if "$PYTHON" -c "import sys, tensorflow as tf; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" \
        >/dev/null 2>&1; then
    suffix=gpu
    backbones=(--rounds 2 --networks conv4_28 resnet18_64 resnet18_112 resnet50_224)
    precision=(--rounds 2 --networks conv4 resnet18 resnet50)
else
    suffix=cpu_quick
    backbones=(--quick --networks conv4_28)
    precision=(--quick --networks conv4)
fi
echo "[gpu.sh] $suffix: writing $OUT_DIR/backbones_$suffix.json and $OUT_DIR/precision_$suffix.json"
"$PYTHON" bench/backbones.py "${backbones[@]}" --bfloat16-anyway --output "$OUT_DIR/backbones_$suffix.json"
"$PYTHON" bench/precision.py "${precision[@]}" --precisions float32 bfloat16 float16 \
    --output "$OUT_DIR/precision_$suffix.json"
