"""Where a blend window's time goes: dense, blend without updates, the window without and with refreshes
(a benchmark, not a test; mean ms per step over 500 steps after a 64-step warm-up, two repeats).

    .venv/bin/python experiments/bench_window.py
    KERAS_BACKEND=jax .venv/bin/python experiments/bench_window.py

LeNet-300-100, low_rank fc1 rank 16 and fc2 rank 12, batch 128, random data; the window is 500 steps with an
update every 25 (as in bench_overhead.py). Also prints the callback's own time per update (its batch hook,
timed only when it does something). Writes ``bench_window_<backend>.txt``.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np

import mutate
from mutate.operator import callback as callback_module

HERE = Path(__file__).resolve().parent
PLAN = {"fc1": ("low_rank", {"rank": 16}), "fc2": ("low_rank", {"rank": 12})}
HOOK: list[float] = []


def _timed_hook(original):
    def hook(self, batch, logs=None):
        t = time.perf_counter()
        original(self, batch, logs)
        if time.perf_counter() - t > 1e-3:  # an update (the plain bookkeeping takes microseconds)
            HOOK.append(time.perf_counter() - t)
    return hook


def per_step(x, y, refresh: bool | None, schedule: mutate.Schedule | None) -> float:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, activation="relu", name="fc1"),
                              keras.layers.Dense(100, activation="relu", name="fc2"), keras.layers.Dense(10, name="fc3")])
    callbacks = []
    if schedule is not None:
        model = mutate.compress(model, PLAN, schedule, refresh=bool(refresh))
        callbacks = [mutate.CompressionCallback()]
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[: 128 * 64], y[: 128 * 64], batch_size=128, epochs=1, verbose=0, callbacks=callbacks)
    HOOK.clear()
    t = time.perf_counter()
    model.fit(x[: 128 * 500], y[: 128 * 500], batch_size=128, epochs=1, verbose=0, callbacks=callbacks)
    return (time.perf_counter() - t) / 500 * 1e3


def main() -> None:
    callback_module.CompressionCallback.on_train_batch_begin = _timed_hook(
        callback_module.CompressionCallback.on_train_batch_begin)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128 * 500, 784)).astype("float32")
    y = rng.integers(0, 10, len(x))
    lines = [f"LeNet-300-100, low_rank 16/12, batch 128, {keras.backend.backend()} backend; ms per step"]
    for rep in range(2):
        dense = per_step(x, y, None, None)
        blend = per_step(x, y, False, mutate.Schedule(0, 100_000, 100_000))
        window = per_step(x, y, False, mutate.Schedule(64, 563, 25))
        refresh = per_step(x, y, True, mutate.Schedule(64, 563, 25))
        hook = 1e3 * float(np.mean(HOOK)) if HOOK else 0.0
        lines.append(f"repeat {rep}: dense {dense:.3f} | blend, no update {blend:.3f} | window, updates without "
                     f"refresh {window:.3f} | window with refresh {refresh:.3f} | callback per update {hook:.1f} ms "
                     f"({len(HOOK)} updates timed)")
        print(lines[-1], flush=True)
    (HERE / f"bench_window_{keras.backend.backend()}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import argparse

    # no options: --help prints what the script does instead of running it
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
