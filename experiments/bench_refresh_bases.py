"""What an in-step refresh costs at the cadence the search runs it, by how it orthonormalises (a benchmark,
not a test).

    KERAS_BACKEND=jax .venv/bin/python experiments/bench_refresh_bases.py
    .venv/bin/python experiments/bench_refresh_bases.py          # TensorFlow

A compiled step (``jax.jit`` / ``tf.function``) holds ``ops.cond(refresh_due, refresh, keep)`` next to a
128 x 784 @ 784 x 300 matmul (the rest of a training step, in miniature). The refresh is low-rank's: the
basis of ``A @ R.T`` (784 x 16), one power step, the SVD of the 16 x 300 projection; its bases come from a
Householder QR, a thin SVD, or two Gram eigendecompositions (`operators.low_rank._orthonormal_tensor`). Each
variant runs 500 steps with the refresh taken every step, once in 25 steps (a search's update frequency) and
never; the table gives ms per step and each refresh's own cost at both cadences. Writes
``bench_refresh_bases_<backend>.txt``.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
from keras import ops

from operators.low_rank import _orthonormal_tensor

HERE = Path(__file__).resolve().parent
STEPS = 500


def _basis(kind: str, y):
    if kind == "qr":
        return ops.qr(y)[0]
    if kind == "thin svd":
        return ops.svd(y, full_matrices=False)[0]
    return _orthonormal_tensor(y)


def _compiled(fn):
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn)


def per_step(kind: str, every: int, a, r, x) -> float:
    def step(pred, a, r, x):
        def refresh():
            q = _basis(kind, ops.matmul(a, ops.transpose(r)))
            q = _basis(kind, ops.matmul(a, ops.matmul(ops.transpose(a), q)))
            _, s, vt = ops.svd(ops.matmul(ops.transpose(q), a), full_matrices=False)
            return vt * ops.expand_dims(s, 1)

        return ops.cond(pred, refresh, lambda: r), ops.sum(ops.tanh(ops.matmul(x, a)))

    fn = _compiled(step)
    flags = [ops.convert_to_tensor(v) for v in (False, True)]
    out = fn(flags[1], a, r, x)
    ops.convert_to_numpy(out[1])
    t = time.perf_counter()
    for i in range(STEPS):
        out = fn(flags[i % every == 0], a, r, x)
    ops.convert_to_numpy(out[1])
    ops.convert_to_numpy(out[0])
    return (time.perf_counter() - t) / STEPS * 1e3


def main() -> None:
    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.standard_normal((784, 300)).astype("float32"))
    r = ops.convert_to_tensor(rng.standard_normal((16, 300)).astype("float32"))
    x = ops.convert_to_tensor(rng.standard_normal((128, 784)).astype("float32"))
    lines = [f"refresh bases, {keras.backend.backend()} backend; ms per step (minimum of 3 rounds); a refresh's own "
             "cost = (step with it - step without) x cadence"]
    for kind in ("qr", "thin svd", "gram eigh"):
        rounds = [[per_step(kind, e, a, r, x) for e in (1, 25, 10**9)] for _ in range(3)]  # interleaved
        every1, every25, never = (min(col) for col in zip(*rounds))
        lines.append(f"{kind:>9}: every step {every1:.3f} | one in 25 {every25:.3f} | never {never:.3f}  -> a refresh "
                     f"costs {every1 - never:.2f} ms back to back, {25 * (every25 - never):.2f} ms at one in 25")
        print(lines[-1], flush=True)
    (HERE / f"bench_refresh_bases_{keras.backend.backend()}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import argparse

    # no options: --help prints what the script does instead of running it
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
