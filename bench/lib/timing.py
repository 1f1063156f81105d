"""Per-step timing inside `model.fit` (a callback), and summaries of the timed steps."""

import statistics
import time

from lib.noise import NoiseMeter


def summarize(seconds, warmup=0):
    """Median/mean/p10/p90 in ms of the step times after `warmup`."""
    meas = list(seconds[warmup:]) if len(seconds) > warmup else list(seconds)
    if not meas:
        return {"timed_steps": 0, "median_ms": None}
    srt = sorted(meas)

    def pct(q):
        return srt[min(len(srt) - 1, int(round(q * (len(srt) - 1))))]

    return {"timed_steps": len(meas), "median_ms": round(1000 * statistics.median(meas), 3),
            "mean_ms": round(1000 * statistics.fmean(meas), 3), "p10_ms": round(1000 * pct(0.1), 3),
            "p90_ms": round(1000 * pct(0.9), 3)}


def step_timer(warmup=5, time_budget=None, max_timed_seconds=None, min_timed_steps=3, noise_from_start=False):
    """A Keras callback recording the wall time of every `fit` step.

    A step's time is the interval between consecutive `on_train_batch_end` calls (the first
    from `on_train_batch_begin`): it covers fetching the batch from the `tf.data` pipeline, the
    forward and backward pass, the optimizer update and Keras' per-step bookkeeping, like the
    peer's whole-step time. The callback overrides `on_train_batch_end`, so Keras dispatches
    callbacks synchronously (as with the default progress bar).

    Other-process CPU is measured from the end of warm-up step `warmup` to the end of
    training (from the start of training with `noise_from_start`, as the peer does).
    `time_budget` (seconds since `on_train_begin`, i.e. before the first step, whose tracing
    counts) stops `fit` after the step in flight; `max_timed_seconds` stops it once that long
    has been timed after warm-up (and at least `min_timed_steps` steps).
    """
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step_seconds = []
            self.noise = NoiseMeter()
            self.other_cores = None
            self.t_train = self.t_prev = self.t_warm = None
            self.train_seconds = None
            self.stopped_by = "steps"

        def on_train_begin(self, logs=None):
            self.t_train = time.perf_counter()
            if noise_from_start:
                self.noise.start()
            if warmup == 0:
                self.noise.start()
                self.t_warm = self.t_train

        def on_train_batch_begin(self, batch, logs=None):
            if self.t_prev is None:
                self.t_prev = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            self.step_seconds.append(now - self.t_prev)
            self.t_prev = now
            if len(self.step_seconds) == warmup:
                if not noise_from_start:
                    self.noise.start()
                self.t_warm = now
            if time_budget is not None and now - self.t_train >= time_budget:
                self.stopped_by = "time_budget"
                self.model.stop_training = True
            timed = len(self.step_seconds) - warmup
            if (max_timed_seconds is not None and self.t_warm is not None and timed >= min_timed_steps
                    and now - self.t_warm >= max_timed_seconds):
                self.stopped_by = "max_timed_seconds"
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.train_seconds = time.perf_counter() - self.t_train
            if self.t_warm is not None or noise_from_start:
                self.other_cores = self.noise.stop()

        def result(self, batch_size):
            s = summarize(self.step_seconds, warmup)
            med = s.get("median_ms")
            s.update({"steps": len(self.step_seconds), "warmup_steps_excluded": min(warmup, len(self.step_seconds)),
                      "first_step_ms": round(1000 * self.step_seconds[0], 1) if self.step_seconds else None,
                      "images_per_sec_median": round(1000 * batch_size / med, 2) if med else None,
                      "train_wall_seconds": round(self.train_seconds, 3) if self.train_seconds else None,
                      "images_per_sec_overall": (round(len(self.step_seconds) * batch_size / self.train_seconds, 2)
                                                 if self.train_seconds else None),
                      "stopped_by": self.stopped_by,
                      "other_procs_cpu_cores": self.other_cores})
            return s

    return StepTimer()
