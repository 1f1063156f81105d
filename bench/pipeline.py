"""Input pipeline: images per second embedding_net's P x K pipeline delivers, against what
training consumes.

Data: the Omniglot background set as users get it, written out by
`embedding_net.data.datasets.materialize_omniglot` (19,280 PNGs of 105 x 105, cached in
bench/cache/), decoded and resized to 28 x 28 by `embedding_net.data.images.read_image` (OpenCV,
area interpolation). Batches: `pk_dataset`, 32 classes x 4 images.

Rows (each timed after a few warm-up batches; the pipeline alone may use every core):

  * load: `read_images` of the whole train split (decode + resize in threads), the one-time
    cost of the in-memory cache (`data.cache: memory`);
  * in memory: `pk_dataset(images=...)`, batches gathered from the decoded array;
  * from disk: `pk_dataset(paths=...)`, every image decoded and resized per batch
    (`data.cache: none`);
  * in memory + augmentation: the in-memory batches through `augment_dataset` with the
    `light` and the `default` albumentations presets (`data.augmentation`), exactly as train.py
    builds them (per-image transforms in `tf.numpy_function`, parallel map, prefetch);
  * training: `model.fit` of conv4 (28 px, embedding 64, triplet semi-hard, Adam 1e-3, the
    collapse monitors as train.py) fed by each of the three pipelines: images consumed per
    second = steps/s x batch.

The pipeline keeps up when it delivers (alone) well above what training consumes, and when
training fed from it is as fast as training fed from memory.
"""

import argparse
import os
import sys
import time

import lib

NAME = "pipeline"
QUICK_ALPHABETS = ("Latin", "Greek", "Atlantean")  # 2 background alphabets (train) + 1 evaluation


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--classes-per-batch", type=int, default=32)
    ap.add_argument("--images-per-class", type=int, default=4)
    ap.add_argument("--batches", type=int, default=200, help="batches timed per pipeline-only row")
    ap.add_argument("--disk-batches", type=int, default=60, help="batches timed for the from-disk row")
    ap.add_argument("--warmup", type=int, default=10, help="batches / steps excluded")
    ap.add_argument("--min-seconds", type=float, default=5.0, help="least time per pipeline-only row")
    ap.add_argument("--fit-steps", type=int, default=80, help="training steps per fit row (warm-up included)")
    ap.add_argument("--data-root", default=None, help="materialised Omniglot folder (default: bench/cache/omniglot_folder)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=int, default=3600)
    lib.add_common_args(ap, NAME)
    a = ap.parse_args(argv)
    if a.quick:
        a.batches, a.disk_batches, a.warmup, a.fit_steps, a.min_seconds = 10, 5, 2, 6, 0.5
    if a.data_root is None:
        a.data_root = os.path.join(lib.CACHE, "omniglot_folder_quick" if a.quick else "omniglot_folder")
    return a


def time_iteration(dataset, batches, warmup, batch_size, min_seconds):
    """Images/s over at least `batches` batches and `min_seconds` seconds, after `warmup`."""
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    meter = lib.NoiseMeter().start()
    t0 = time.perf_counter()
    done = 0
    while done < batches or time.perf_counter() - t0 < min_seconds:
        x, _ = next(it)
        done += 1
    x.numpy()
    dt = time.perf_counter() - t0
    batches = done
    return {"batches": batches, "seconds": round(dt, 3), "images_per_sec": round(batches * batch_size / dt, 1),
            "other_procs_cpu_cores": meter.stop()}


def worker(a):
    import embedding_net  # noqa: F401  (before TensorFlow)
    import keras
    import tensorflow as tf

    from embedding_net.data.augmentation import augment_dataset, build_augmentation
    from embedding_net.data.folders import scan_image_folder
    from embedding_net.data.images import read_images
    from embedding_net.losses.triplet import TripletLoss
    from embedding_net.models.builders import build_embedding_model
    from embedding_net.mining.monitors import collapse_monitors
    from embedding_net.data.sampling import pk_dataset
    from embedding_net.optim import build_optimizer

    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    keras.utils.set_random_seed(a.seed)
    size = (a.size, a.size)
    batch = a.classes_per_batch * a.images_per_class
    folder = scan_image_folder(os.path.join(a.data_root, "train"))
    rows = {}
    meter = lib.NoiseMeter().start()
    t0 = time.perf_counter()
    images, failed = read_images(folder.paths, size, 1)
    dt = time.perf_counter() - t0
    rows["load"] = {"images": len(folder.paths), "seconds": round(dt, 3),
                    "images_per_sec": round(len(folder.paths) / dt, 1), "failed": len(failed),
                    "other_procs_cpu_cores": meter.stop()}
    num_classes = len(folder.class_names)
    p = min(a.classes_per_batch, num_classes)
    batch = p * a.images_per_class

    def memory():
        return pk_dataset(folder.labels, num_classes, p, a.images_per_class, images=images, seed=a.seed)

    def disk():
        return pk_dataset(folder.labels, num_classes, p, a.images_per_class, paths=folder.paths,
                          image_size=size, channels=1, seed=a.seed)

    def augmented(preset):
        return lambda: augment_dataset(memory(), build_augmentation(preset), seed=a.seed)

    makers = {"in_memory": memory, "from_disk": disk, "in_memory_light": augmented("light"),
              "in_memory_default": augmented("default")}
    for key, make in makers.items():
        n = a.disk_batches if key == "from_disk" else a.batches
        rows[key] = time_iteration(make(), n, a.warmup, batch, a.min_seconds)
        print(f"[pipeline] {key}: {rows[key]['images_per_sec']:,.0f} images/s", flush=True)
    for key, make in makers.items():
        model = build_embedding_model("conv4", (a.size, a.size, 1), 64)
        model.compile(optimizer=build_optimizer("adam", 1e-3), loss=TripletLoss(0.2, "semi_hard"),
                      metrics=collapse_monitors(0.2))
        timer = lib.step_timer(warmup=a.warmup)
        model.fit(make(), epochs=1, steps_per_epoch=a.fit_steps, verbose=0, callbacks=[timer], shuffle=False)
        r = timer.result(batch)
        rows[f"fit_{key}"] = {"steps": r["steps"], "median_step_ms": r["median_ms"],
                              "images_per_sec": r["images_per_sec_median"],
                              "other_procs_cpu_cores": r["other_procs_cpu_cores"]}
        print(f"[pipeline] fit {key}: {r['images_per_sec_median']} images/s", flush=True)
    lib.worker_reply({"rows": rows, "batch": batch, "train_images": len(folder.paths),
                         "train_classes": num_classes, "versions": lib.ml_versions()})


def main(argv=None):
    a = parse_args(argv)
    if a._worker:
        return worker(a)
    started = time.perf_counter()
    from embedding_net.data.datasets.omniglot import is_materialized, materialize_omniglot

    materialize_seconds = None
    if not is_materialized(a.data_root):
        print(f"[bench] writing Omniglot PNGs to {a.data_root} (once)", flush=True)
        t0 = time.perf_counter()
        materialize_omniglot(a.data_root, alphabets=QUICK_ALPHABETS if a.quick else None)
        materialize_seconds = round(time.perf_counter() - t0, 1)
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", "1", "--size", str(a.size),
           "--classes-per-batch", str(a.classes_per_batch), "--images-per-class", str(a.images_per_class),
           "--batches", str(a.batches), "--disk-batches", str(a.disk_batches), "--warmup", str(a.warmup),
           "--fit-steps", str(a.fit_steps), "--min-seconds", str(a.min_seconds), "--data-root", a.data_root, "--seed", str(a.seed)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    rc, out, err, wall, other_whole, js = lib.run_subprocess(
        cmd, timeout=a.timeout, log_path=os.path.join(lib.CACHE, "logs", NAME, "worker.log"))
    if rc != 0 or js is None:
        raise SystemExit(f"pipeline worker failed (rc {rc}):\n{err}")
    rows = js["rows"]
    labels = {"load": "load: read_images of the train split (decode + resize, once)",
              "in_memory": "pk_dataset, in memory", "from_disk": "pk_dataset, from disk (decode + resize per batch)",
              "in_memory_light": "pk_dataset, in memory + augmentation `light`",
              "in_memory_default": "pk_dataset, in memory + augmentation `default`"}
    table = []
    for key, label in labels.items():
        r = rows[key]
        fit = rows.get(f"fit_{key}")
        valid = all(v is not None and v <= a.noise_threshold for v in
                    [r.get("other_procs_cpu_cores")] + ([fit.get("other_procs_cpu_cores")] if fit else []))
        table.append([label, lib.fmt(r["images_per_sec"], 0),
                      lib.fmt(fit["images_per_sec"], 0) if fit else "-",
                      lib.fmt(r["images_per_sec"] / fit["images_per_sec"], 1) + "x" if fit and fit["images_per_sec"] else "-",
                      lib.fmt(r.get("other_procs_cpu_cores"), 3), "yes" if valid else "NO"])
        r["valid"] = valid
    lib.print_table(f"input pipeline vs training (conv4 {a.size}px, batch {js['batch']})",
                       ["pipeline", "delivers (images/s, alone)", "training fed by it consumes (images/s)",
                        "headroom", "other procs (cores)", "valid"], table)
    config = {k: v for k, v in vars(a).items() if not k.startswith("_") and k != "output"}
    lib.finish(NAME, a, {"kind": NAME, "config": config, "materialize_seconds": materialize_seconds,
                            "train_images": js["train_images"], "train_classes": js["train_classes"],
                            "batch": js["batch"], "versions": js["versions"], "rows": rows,
                            "subprocess_wall_s": wall}, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
