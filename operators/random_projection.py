"""Random projection: A (m x n) ≈ R @ C with R (m x k) a fixed random sign matrix, regenerated from a seed, never
stored."""

from __future__ import annotations

from typing import Any

import numpy as np

from operators._hash import signs, signs_tensor
from operators._base import FactorSpec, Factors, TwoFactor, check_int
from operators._registry import register


def projection(shape: tuple[int, int], seed: int, scale_dim: int) -> np.ndarray:
    """Entries ±1/sqrt(scale_dim), hashed from ``seed`` (`operators._hash`: the same on every machine and in a
    LiteRT graph). Sign matrices serve random projections as Gaussian ones do (Achlioptas 2003)."""
    return (signs(shape, seed) / np.float32(np.sqrt(scale_dim))).astype(np.float32)


def projection_tensor(shape: tuple[int, int], seed: int, scale_dim: int, start: Any) -> Any:
    """`projection` computed in the graph from a run-time zero ``start`` (exports: never a stored constant)."""
    return signs_tensor(shape, seed, start) * np.float32(1.0 / np.sqrt(scale_dim))


@register("random_projection")
class RandomProjection(TwoFactor):
    """One factor is random and fixed (0 stored bits), the other (``right``, k x n) is fit then trained.

    ``right`` starts as the least-squares solution of R @ C = A. A Dense layer computes ``(x @ R) @ C``.

    Args:
        rank: k, in [1, min(m, n)].
        seed: seed of R.
    """

    stack_inputs = ("right",)  # stored as they are: a next stage in a stack may compress them

    generated = ("projection",)
    left_name = "projection"

    def __init__(self, rank: int = 16, *, seed: int = 0) -> None:
        self.rank = rank
        self.seed = seed

    def check(self, m: int | None = None, n: int | None = None) -> None:
        limit = min(m, n) if m is not None and n is not None else float("inf")
        check_int("rank", self.rank, 1, limit, shape=f"{m}x{n}" if m is not None else "")
        check_int("seed", self.seed, 0)

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        return {"projection": FactorSpec((m, self.rank), trainable=False), "right": FactorSpec((self.rank, n))}

    def generate(self, name: str, m: int, n: int) -> np.ndarray:
        return projection((m, self.rank), self.seed, self.rank)

    def generate_tensor(self, name: str, m: int, n: int, start: Any) -> Any:
        return projection_tensor((m, self.rank), self.seed, self.rank, start)

    def _factor(self, a: np.ndarray) -> Factors:
        r = self.generate("projection", *a.shape)
        c, *_ = np.linalg.lstsq(r.astype(np.float64), a.astype(np.float64), rcond=None)
        return {"projection": r, "right": c}

