"""What the blend's in-graph bookkeeping costs per training step (a benchmark, not a test).

Each blending kernel's `KernelState.begin_call` computes alpha from its step (a constant table and ~10 scalar
ops), asserts the callback drives training (TensorFlow) and counts the batch. Here the blended
LeNet-300-100 of `bench_overhead.py` (low_rank fc1 r=16, fc2 r=12) is timed three ways against dense, in
interleaved rounds (minimum per model, `bench_overhead.step_times`):

- ``real``: the layer as shipped;
- ``noop``: ``begin_call`` returns at once (alpha stays as last assigned: the floor of the bookkeeping);
- ``table``: alpha read from a per-step lookup table (5 ops) and the step counted, no assert.

    .venv/bin/python experiments/bench_bookkeeping.py            # steps_per_execution 32 and 1
    .venv/bin/python experiments/bench_bookkeeping.py --spe 32 --repeats 7

Output: one line per steps_per_execution, also appended to ``bench_bookkeeping.txt``.
"""

from __future__ import annotations

import argparse
import types
from pathlib import Path

import keras
import numpy as np
from keras import ops

import bench_overhead as bo
import mutate
from mutate.operator.state import KernelState

OUT = Path(__file__).with_name("bench_bookkeeping.txt")


def _noop(self: KernelState, training, a=None) -> None:
    return None


def _table(self: KernelState, training, a=None) -> None:
    if training is None:
        training = self._fit_training
    if self.spliced or training is not True:
        return
    sched = self.schedule
    n = sched.final_step + 2
    if not hasattr(self, "_bench_table"):
        steps = np.arange(n)
        passed = np.where(steps < sched.begin_step, 0,
                          np.minimum((steps - sched.begin_step) // sched.frequency + 1, sched.num_updates))
        values = np.array([1.0] + [sched.alpha(sched.begin_step + i * sched.frequency)
                                   for i in range(sched.num_updates)], np.float32)
        self._bench_table = values[passed]
    alpha = ops.take(ops.convert_to_tensor(self._bench_table), ops.minimum(ops.cast(self.step, "int32"), n - 1))
    self.alpha.assign(ops.where(self.factored > 0, alpha, ops.ones_like(alpha)))
    self.step.assign_add(ops.cast(1, self.step.dtype))


def blended(begin_call=None) -> keras.Model:
    model = bo.lenet()
    mutate.compress(model, {"fc1": ("low_rank", {"rank": 16}), "fc2": ("low_rank", {"rank": 12})},
                    mutate.Schedule(0, 10**7, 10**6))  # factored at step 0, no further update while timed
    for layer in model.layers:
        state = getattr(layer, "mutate_kernel", None)
        if begin_call is not None and isinstance(state, KernelState):
            state.begin_call = types.MethodType(begin_call, state)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spe", type=int, nargs="+", default=[32, 1])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200 * 128, 784)).astype("float32")
    y = rng.integers(0, 10, len(x))
    for spe in args.spe:
        runs = {"dense": (bo.lenet(), []), "real": (blended(), [mutate.CompressionCallback()]),
                "noop": (blended(_noop), [mutate.CompressionCallback()]),
                "table": (blended(_table), [mutate.CompressionCallback()])}
        t = bo.step_times(runs, x, y, 128, spe=spe, reps=args.repeats)
        line = (f"{keras.backend.backend()} steps_per_execution {spe:>2}: "
                + " | ".join(f"{k} {v * 1e3:.3f} ms ({v / t['dense']:.3f}x)" for k, v in t.items()))
        print(line, flush=True)
        with OUT.open("a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
