"""A ±1 matrix from a seed, by integer hashing that NumPy and a LiteRT graph compute bit for bit alike.

Random projection and SimHash never store their random matrix R: it is regenerated from the seed. A Keras
graph that holds R as a constant makes a LiteRT converter store it (SimHash's LeNet file was 57x its counted
bytes). Here entry ``t`` (row-major) of R is a hash of ``t`` and the seed in int32 arithmetic whose every
intermediate stays below 2**31 (values modulo the prime `P` < 2**15, so a product of two is < 2**30): no
overflow on any backend, and only ADD, MUL, FLOOR_DIV and FLOOR_MOD in the graph. Exported with a run-time
zero as the start of the index range (`mutate.operator.anchor`), the converter cannot fold it into a
constant, and the file stores only the seed's few constants (at the price of hashing R at every inference).

The map: ``lo, hi = t mod 2**15, t div 2**15``; ``h = (181 lo + 7 hi + s) mod P``; then `ROUNDS` rounds of
``h = (h*h + c_r + (lo if r even else hi) * 3) mod P``; the entry is +1 when ``h`` is even, else -1. Its sign
balance and row correlations behave like independent fair signs (tests/test_hash.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

P = 32749
"""The modulus: the largest prime below 2**15."""
ROUNDS = (12345, 2749, 30011, 977, 16411)
"""Additive constants of the nonlinear rounds."""


def _seed(seed: int) -> int:
    return (int(seed) * 7919 + 4099) % P


def signs(shape: tuple[int, int], seed: int) -> np.ndarray:
    """The ±1 float32 matrix of ``shape`` for ``seed`` (NumPy)."""
    t = np.arange(int(np.prod(shape)), dtype=np.int64)
    lo, hi = t % 32768, t // 32768
    h = (181 * lo + 7 * hi + _seed(seed)) % P
    for r, c in enumerate(ROUNDS):
        h = (h * h + c + 3 * (lo if r % 2 == 0 else hi)) % P
    return np.where(h % 2 == 0, 1.0, -1.0).astype(np.float32).reshape(shape)


def signs_tensor(shape: tuple[int, int], seed: int, start: Any) -> Any:
    """`signs` in Keras ops (int32 throughout), the index range starting at ``start``: a run-time zero."""
    import keras
    from keras import ops

    count = int(np.prod(shape))
    if count >= 2 ** 30:
        raise ValueError(f"a generated {shape} matrix is too large to hash in int32")
    if keras.backend.backend() == "jax":  # JAX's arange needs concrete bounds (a traced start in an export)
        t = ops.add(ops.arange(count, dtype="int32"), ops.cast(start, "int32"))
    else:  # a Range op from the run-time start: a converter cannot fold it into a stored constant
        t = ops.arange(start, start + count, dtype="int32")
    lo, hi = ops.mod(t, 32768), ops.floor_divide(t, 32768)
    h = ops.mod(lo * 181 + hi * 7 + _seed(seed), P)
    for r, c in enumerate(ROUNDS):
        h = ops.mod(h * h + (c + (lo if r % 2 == 0 else hi) * 3), P)
    return ops.reshape(1.0 - 2.0 * ops.cast(ops.mod(h, 2), "float32"), shape)
