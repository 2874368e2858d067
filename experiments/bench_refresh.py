"""What one low-rank refresh costs, and what the in-graph refresh adds to a trace (a benchmark, not a test).

    .venv/bin/python experiments/bench_refresh.py

A 784x300 matrix at rank 16 (LeNet-300-100's fc1): the exact host SVD (`LowRank.factor`, the refresh before
the graph refresh), the NumPy refresh (`LowRank.refreshed`, what PyTorch runs on the host), and the
in-graph refresh (`LowRank.refreshed_tensor` under ``tf.function``). Then the first ``fit`` of a 64-256-256-10
MLP (its trace) dense, blended without refresh, and blended with the in-graph refresh. Writes
``bench_refresh.txt``.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import mutate
import operators

HERE = Path(__file__).resolve().parent


def per_call(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e3


def trace_seconds(plan: dict | None, refresh: bool) -> float:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu", name="dense_1"),
                              keras.layers.Dense(256, activation="relu", name="dense_2"), keras.layers.Dense(10, name="logits")])
    callbacks = []
    if plan:
        model = mutate.compress(model, plan, mutate.Schedule(0, 99, 10), refresh=refresh)
        callbacks = [mutate.CompressionCallback()]
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.random.default_rng(0).random((64, 64), dtype=np.float32), np.zeros(64, "int32")
    t = time.perf_counter()
    model.fit(x, y, batch_size=32, verbose=0, callbacks=callbacks)
    return time.perf_counter() - t


def main() -> None:
    op = operators.get("low_rank", rank=16)
    a = np.random.default_rng(0).standard_normal((784, 300)).astype(np.float32)
    factors = op.factor(a)
    graph = tf.function(lambda m, r: op.refreshed_tensor(m, {"right": r}))
    m, r = tf.constant(a), tf.constant(factors["right"])
    lines = ["low_rank rank 16 of a 784x300 matrix, ms per refresh:",
             f"  exact host SVD (factor)      {per_call(lambda: op.factor(a), 20):7.2f}",
             f"  NumPy refresh (refreshed)    {per_call(lambda: op.refreshed(a, factors), 20):7.2f}",
             f"  in-graph refresh (TF)        {per_call(lambda: graph(m, r)['left'].numpy(), 50):7.2f}",
             "first fit (trace) of a 64-256-256-10 MLP, seconds:"]
    plan = {"dense_1": ("low_rank", {"rank": 16})}
    for label, p, refresh in (("dense", None, False), ("blended, no refresh", plan, False),
                              ("blended, in-graph refresh", plan, True)):
        lines.append(f"  {label:28s} {trace_seconds(p, refresh):7.2f}")
    print("\n".join(lines))
    (HERE / "bench_refresh.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import argparse

    # no options: --help prints what the script does instead of running it
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
