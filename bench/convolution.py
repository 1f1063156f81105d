"""One convolution's training cost (forward, input gradient, kernel gradient): Keras' `Conv2D`
against `embedding_net.models.convolution.Conv2D` with its matrix-product kernel gradient, per
ResNet18 layer shape and compute dtype. The crossover it shows sets
`MATMUL_GRADIENT_MAX_CELLS` (which output maps take the matrix product).

    python bench/convolution.py                    # ResNet18's 3x3 shapes at 64 and 112 px
    python bench/convolution.py --batch 32 --dtypes float32

Both layers run in one process, alternately, `--repeats` timed calls each of one compiled
`tf.function` (forward, `tape.gradient` with respect to input and kernel); the median is
reported. Writes bench/results/convolution.json.
"""

import argparse
import statistics
import sys
import time

import lib
from precision import cpu_flags

NAME = "convolution"
# (input side, channels in, channels out, kernel, stride): ResNet18's 3 x 3 layers at 64 px (and
# the same shapes at 112 px, twice the side).
SHAPES = [(16, 64, 64, 3, 1), (8, 128, 128, 3, 1), (4, 256, 256, 3, 1), (2, 512, 512, 3, 1),
          (32, 64, 64, 3, 1), (16, 128, 128, 3, 1), (8, 256, 256, 3, 1), (4, 512, 512, 3, 1)]


def measure(shape, dtype, batch, repeats, forced):
    import keras
    import numpy as np
    import tensorflow as tf

    from embedding_net.models import convolution

    side, channels_in, channels_out, kernel, stride = shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, side, side, channels_in)), dtype)
    layers = {"keras": keras.layers.Conv2D(channels_out, kernel, strides=stride, padding="same", use_bias=False,
                                           dtype=keras.DTypePolicy(f"mixed_{dtype}" if dtype != "float32" else dtype)),
              "ours": convolution.Conv2D(channels_out, kernel, strides=stride, padding="same", use_bias=False,
                                         dtype=keras.DTypePolicy(f"mixed_{dtype}" if dtype != "float32" else dtype))}
    for layer in layers.values():
        layer.build(x.shape)
    layers["ours"].set_weights(layers["keras"].get_weights())
    assert layers["ours"]._matmul_gradient(x.shape) or not forced

    def step_of(layer):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(tf.cast(y, "float32") ** 2)
            d_x, d_kernel = tape.gradient(loss, [x, layer.kernel])
            return tf.reduce_sum(tf.cast(d_x, "float32")) + tf.reduce_sum(d_kernel)
        return step

    steps = {name: step_of(layer) for name, layer in layers.items()}
    times = {name: [] for name in steps}
    for step in steps.values():
        step(), step()
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step().numpy()
            times[name].append(time.perf_counter() - started)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=15)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    import embedding_net  # noqa: F401  (before TensorFlow: sets TF_ENABLE_ONEDNN_OPTS)
    from embedding_net.models import convolution

    # Every shape through the matrix product, so that both ways are measured everywhere.
    convolution.MATMUL_GRADIENT_MAX_CELLS.clear()
    convolution.MATMUL_GRADIENT_MAX_CELLS_DEFAULT = 1 << 30
    started, rows, records = time.perf_counter(), [], []
    shapes = SHAPES[:2] if a.quick else SHAPES
    for dtype in a.dtypes:
        for shape in shapes:
            ms = measure(shape, dtype, a.batch, 3 if a.quick else a.repeats, forced=True)
            cells = (shape[0] // shape[4]) ** 2
            records.append({"dtype": dtype, "side": shape[0], "channels_in": shape[1], "channels_out": shape[2],
                            "kernel": shape[3], "stride": shape[4], "output_cells": cells, "batch": a.batch,
                            "keras_ms": round(ms["keras"], 3), "matmul_gradient_ms": round(ms["ours"], 3),
                            "keras_over_matmul": round(ms["keras"] / ms["ours"], 3)})
            rows.append([dtype, f"{shape[0]}x{shape[0]}x{shape[1]} -> {shape[2]}", cells, lib.fmt(ms["keras"], 2),
                         lib.fmt(ms["ours"], 2), lib.fmt(ms["keras"] / ms["ours"], 2)])
            print(f"[convolution] {rows[-1]}", flush=True)
    lib.print_table(f"one 3x3 convolution, forward + both gradients, batch {a.batch} (median ms)",
                    ["dtype", "input -> channels", "output cells", "oneDNN gradient", "matmul gradient",
                     "speed-up"], rows)
    lib.finish(NAME, a, {"kind": NAME, "cpu_bf16_flags": cpu_flags(), "records": records}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
