"""SimHash: A (m x n) ≈ Rᵀ sign(R A) diag(s), R (k x m) random signs from a seed (never stored), 1 bit per sign."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from operators._base import Compressor, FactorSpec, Factors, check_int
from operators._bits import pack_codes, packed_bytes, unpack_codes
from operators._registry import register
from operators.random_projection import projection, projection_tensor


@register("simhash")
class SimHash(Compressor):
    """Hashes each column of A to k sign bits of a random projection, with a per-column scale.

    Factors: ``projection`` R (k x m, regenerated from ``seed``), ``signs`` (k x n, ±1, fixed) and ``scale``
    (n,, trainable), chosen so each reconstructed column keeps the norm of A's column. A spliced layer
    stores the signs as bits and the scales: ``8*ceil(k*n/8) + 32*n`` bits (the seed is configuration). A
    Dense layer computes ``((x @ Rᵀ) @ signs) * scale`` and never forms an m x n matrix.

    Args:
        rank: k, the number of hash bits per column (>= 1).
        seed: seed of R.
    """

    generated = ("projection",)

    def __init__(self, rank: int = 64, *, seed: int = 0) -> None:
        self.rank = rank
        self.seed = seed

    def check(self, m: int | None = None, n: int | None = None) -> None:
        check_int("rank", self.rank, 1)
        check_int("seed", self.seed, 0)

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        return {"projection": FactorSpec((self.rank, m), trainable=False),
                "signs": FactorSpec((self.rank, n), trainable=False), "scale": FactorSpec((n,))}

    def generate(self, name: str, m: int, n: int) -> np.ndarray:
        return projection((self.rank, m), self.seed, self.rank)

    def generate_tensor(self, name: str, m: int, n: int, start: Any) -> Any:
        return projection_tensor((self.rank, m), self.seed, self.rank, start)

    def _factor(self, a: np.ndarray) -> Factors:
        r = self.generate("projection", *a.shape)
        signs = np.where(r @ a >= 0, 1.0, -1.0).astype(np.float32)
        base = r.T @ signs
        norm = np.linalg.norm(base, axis=0)
        scale = np.divide(np.linalg.norm(a, axis=0), norm, out=np.zeros(a.shape[1], np.float32), where=norm > 0)
        return {"projection": r, "signs": signs, "scale": scale}

    def product(self, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        return ops.matmul(ops.transpose(factors["projection"]), factors["signs"]) * factors["scale"]

    def matmul(self, x: Any, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        hashed = ops.matmul(x, ops.transpose(factors["projection"]))
        return ops.matmul(hashed, factors["signs"]) * factors["scale"]

    def packed_specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        return {"signs": FactorSpec((packed_bytes(self.rank * n, 1),), "uint8", trainable=False),
                "scale": FactorSpec((n,))}

    def pack(self, factors: Factors) -> Factors:
        return {"signs": pack_codes(factors["signs"] > 0, 1), "scale": factors["scale"]}

    def unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        from keras import ops

        bits = unpack_codes(packed["signs"], self.rank * n, 1)
        signs = ops.reshape(ops.cast(bits, "float32") * 2.0 - 1.0, (self.rank, n))
        return {"signs": signs, "scale": packed["scale"]}
