"""A user-defined mutate operator: ternary weights (Li & Liu, 2016) with a per-column scale.

A (m x n) ≈ T ⊙ s, T in {-1, 0, +1} (m x n) and s (n,). The product is elementwise, not a matmul. A spliced
layer stores T at 2 bits per weight and s as float32: ``8*ceil(2*m*n/8) + 32*n`` bits (about 16x).
Register it by importing this module, or by installing this package (entry point ``mutate.operators``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

import operators
from operators._bits import pack_codes, packed_bytes, unpack_codes


@operators.register("ternary")
class Ternary(operators.Compressor):
    """Weights below ``threshold`` times the column's mean magnitude become 0, the rest ±scale.

    Args:
        threshold: fraction of the mean absolute weight of a column under which a weight is zeroed (>= 0).
    """

    def __init__(self, threshold: float = 0.7) -> None:
        self.threshold = threshold

    def check(self, m: int | None = None, n: int | None = None) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < 10:
            raise ValueError(f"`threshold` must be in [0, 10), but got threshold={t!r}.")

    def specs(self, m: int, n: int) -> dict[str, operators.FactorSpec]:
        return {"ternary": operators.FactorSpec((m, n), "int8", trainable=False),
                "scale": operators.FactorSpec((n,))}

    def _factor(self, a: np.ndarray) -> operators.Factors:
        cut = self.threshold * np.abs(a).mean(axis=0)
        t = np.where(np.abs(a) > cut, np.sign(a), 0).astype(np.int8)
        kept = np.maximum((t != 0).sum(axis=0), 1)
        return {"ternary": t, "scale": (np.abs(a) * (t != 0)).sum(axis=0) / kept}

    def product(self, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        return ops.cast(factors["ternary"], "float32") * factors["scale"]

    def packed_specs(self, m: int, n: int) -> dict[str, operators.FactorSpec]:
        return {"ternary": operators.FactorSpec((packed_bytes(m * n, 2),), "uint8", trainable=False),
                "scale": operators.FactorSpec((n,))}

    def pack(self, factors: operators.Factors) -> operators.Factors:
        return {"ternary": pack_codes(factors["ternary"].astype(np.int64) + 1, 2), "scale": factors["scale"]}

    def unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        from keras import ops

        codes = unpack_codes(packed["ternary"], m * n, 2)
        return {"ternary": ops.reshape(codes - 1, (m, n)), "scale": packed["scale"]}
