"""LiteRT interpreter latency of each operator's spliced LeNet-300-100 against dense (a benchmark, not a test).

    .venv/bin/python experiments/bench_litert.py | tee experiments/bench_litert.txt

The models and the export are `litert_sizes.py`'s (fc1 and fc2 compressed by one operator, spliced, exported
by `mutate.export_model`'s path: packed arrays unpacked at run time). Each file runs in TensorFlow's LiteRT
interpreter at batch 1 and batch 256, with the default delegates (XNNPACK on this CPU) and without them
(builtin kernels only), median of 7 rounds of ``--reps`` calls. Ratios are against the dense model measured in
the same run and the same mode: a lowering that keeps the file small but runs slower shows here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from litert_sizes import OPERATORS, convert, spliced  # noqa: E402


def interpreter(blob: bytes, batch: int, delegates: bool):
    import tensorflow as tf

    kind = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=blob, experimental_op_resolver_type=(
            kind.AUTO if delegates else kind.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], (batch, 784))
    it.allocate_tensors()
    it.set_tensor(inp["index"], np.random.default_rng(0).standard_normal((batch, 784)).astype(np.float32))
    return it


def latency(blob: bytes, batch: int, delegates: bool, reps: int) -> float:
    """Median microseconds per call over 7 rounds."""
    it = interpreter(blob, batch, delegates)
    it.invoke()
    rounds = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(reps):
            it.invoke()
        rounds.append((time.perf_counter() - t) / reps * 1e6)
    return statistics.median(rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    modes = [(1, True), (256, True), (1, False), (256, False)]
    base: dict[tuple[int, bool], float] = {}
    print(f"{'operator':<24}{'params':<32}" + "".join(f"{f'b{b} ' + ('xnnpack' if d else 'builtin'):>24}"
                                                     for b, d in modes))
    for op, params in OPERATORS:
        blob = convert(spliced(op, params), "mutate")
        cells = []
        for mode in modes:
            t = latency(blob, *mode, reps=args.reps if mode[0] == 1 else max(10, args.reps // 10))
            if op == "dense":
                base[mode] = t
            cells.append(f"{t:>10.1f} us ({t / base[mode]:>5.2f}x)")
        print(f"{op:<24}{str(params):<32}" + "".join(f"{c:>24}" for c in cells), flush=True)
    import os

    print(f"(us per call, median of 7 rounds; ratio to dense in the same mode; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
