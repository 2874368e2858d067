"""Random projection: A (m x n) ≈ R @ C with R (m x k) fixed Gaussian, regenerated from a seed, never stored."""

from __future__ import annotations


import numpy as np

from operators._base import FactorSpec, Factors, TwoFactor, check_int
from operators._registry import register


def gaussian(shape: tuple[int, int], seed: int, scale_dim: int) -> np.ndarray:
    """Entries N(0, 1/scale_dim) from NumPy's PCG64 stream for ``seed`` (the same on every machine)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) / np.sqrt(scale_dim)).astype(np.float32)


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
        return gaussian((m, self.rank), self.seed, self.rank)

    def _factor(self, a: np.ndarray) -> Factors:
        r = self.generate("projection", *a.shape)
        c, *_ = np.linalg.lstsq(r.astype(np.float64), a.astype(np.float64), rcond=None)
        return {"projection": r, "right": c}

