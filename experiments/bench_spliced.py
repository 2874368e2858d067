"""Training step of spliced LeNet-300-100 per operator against the dense model, one process (a benchmark, not
a test).

    .venv/bin/python experiments/bench_spliced.py [--steps 40] [--batch 128]
    KERAS_BACKEND=jax .venv/bin/python experiments/bench_spliced.py

fc1 and fc2 spliced with each operator (at ratios a search would pick), timed two ways in the same run: as a
spliced layer computes now (the codes of its bit-packed arrays decoded once and held, pruning's kept positions
held, a narrow codebook's gradient summed by a bincount on TensorFlow) and as it did before (every call
unpacking the packed arrays, TensorFlow's own gather gradient), `KernelState.hold_codes` and
`operators._base._NARROW` switched off. Each row is the median of 5 epochs after a warm-up epoch; the dense
anchor is timed before and after the rows (their mean). Writes ``bench_spliced_<backend>.txt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras
import numpy as np

import mutate
import operators._base as base
from mutate.operator.state import KernelState

from bench_overhead import lenet, step_time

HERE = Path(__file__).resolve().parent
OPERATORS = [("low_rank", {"rank": 16}), ("pruning", {"sparsity": 0.9}), ("kmeans", {"k": 16}),
             ("kmeans", {"k": 4}), ("simhash", {"rank": 256}), ("dictionary", {"atoms": 32, "n_nonzero": 4}),
             ("pruning+kmeans", {"sparsity": 0.9, "k": 16})]


def spliced(op: str, params: dict, x: np.ndarray, y: np.ndarray) -> keras.Model:
    model = lenet()
    mutate.compress(model, {"fc1": (op, params), "fc2": (op, params)}, mutate.Schedule(0, 0, 1))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:128], y[:128], batch_size=128, verbose=0, callbacks=[mutate.CompressionCallback()])
    return mutate.strip(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.steps * args.batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    first = step_time(lenet(), x, y, args.batch, [])
    rows = []
    for op, params in OPERATORS:
        times = []
        for now in (True, False):
            KernelState.hold_codes, base._NARROW = now, (16 if now else 0)
            times.append(step_time(spliced(op, params, x, y), x, y, args.batch, []))
        KernelState.hold_codes, base._NARROW = True, 16
        rows.append((f"{op} {params}", *times))
    dense = (first + step_time(lenet(), x, y, args.batch, [])) / 2
    lines = [f"LeNet-300-100, fc1 and fc2 spliced, batch {args.batch}, {keras.backend.backend()} backend; "
             f"train step dense {1e3 * dense:.3f} ms (before the rows {1e3 * first:.3f})"]
    for name, now, before in rows:
        lines.append(f"  {name:<45} spliced {1e3 * now:7.3f} ms ({now / dense:.2f}x of dense) | "
                     f"unpacking every call {1e3 * before:7.3f} ms ({before / dense:.2f}x)")
    print("\n".join(lines))
    (HERE / f"bench_spliced_{keras.backend.backend()}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
