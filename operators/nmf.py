"""Nonnegative matrix factorization by HALS: A (m x n) ≈ left (m x r) @ right (r x n) with left >= 0.

Weight matrices are signed, so the operator switches to semi-NMF when A has a negative entry: ``left`` stays
nonnegative and ``right`` is unconstrained (Ding, Li and Jordan, 2010). When A >= 0 both factors are >= 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from operators._base import FactorSpec, Factors, TwoFactor, check_int
from operators._registry import register
from operators.sketching import SparseLeft

_TINY = 1e-12


def _check_real(name: str, value: Any, *, positive: bool = False) -> None:
    """Raise unless ``value`` is a finite real >= 0 (> 0 when ``positive``); the message echoes the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number, but got {name}={value!r}.")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"`{name}` must be a finite number {'>' if positive else '>='} 0, but got {name}={value!r}.")


def _hals_columns(w: np.ndarray, ata: np.ndarray, gram: np.ndarray, l1: float, sweeps: int) -> None:
    """In place: ``sweeps`` HALS passes of ``min ½‖A - w Bᵀ‖² + l1·Σw`` over w >= 0, one column at a time.

    Args:
        w: the nonnegative factor, shape (p, r), updated in place.
        ata: ``A B``, shape (p, r).
        gram: ``Bᵀ B``, shape (r, r).
        l1: the penalty on the entries of ``w``.
        sweeps: passes over the r columns (cheap next to forming ``ata``, so a few pay off).
    """
    for _ in range(sweeps):
        for k in range(w.shape[1]):
            if gram[k, k] > _TINY:
                w[:, k] = np.maximum(w[:, k] + (ata[:, k] - w @ gram[:, k] - l1) / gram[k, k], 0.0)


def nmf(a: np.ndarray, rank: int, *, max_iter: int = 200, tol: float = 1e-4, l1: float = 0.0,
        seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """(Semi-)NMF of ``a`` by hierarchical alternating least squares (Cichocki and Phan, 2009; Gillis, 2012).

    Minimises ``½‖A - W H‖²_F + l1·Σ W`` with ``W >= 0``; ``H >= 0`` too when ``A >= 0`` (NMF), else ``H`` is
    unconstrained and solved exactly by least squares (semi-NMF). Rows of H are kept at unit norm, so the
    scale lives in W and the penalty cannot be dodged by shrinking W. Starts from a seeded uniform W.

    Args:
        a: the matrix, shape (m, n).
        rank: r, in [1, min(m, n)].
        max_iter: outer iterations (one update of H and one of W each).
        tol: stop when the objective decreases by less than ``tol`` times itself in one iteration.
        l1: the penalty λ on ΣW. H's rows have unit norm, so an update zeroes W[i, k] when the residual of
            row i, without component k, correlates with H[k] by at most λ.
        seed: seed of the initial W.

    Returns:
        W (m, r) >= 0, H (r, n) and the number of iterations run, all float64.
    """
    a = np.asarray(a, np.float64)
    m, n = a.shape
    semi = bool(np.any(a < 0))
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.0, 1.0, (m, rank))
    h = rng.uniform(0.0, 1.0, (rank, n))
    fit = w @ h
    w *= max(float(np.sum(a * fit)), 0.0) / max(float(np.sum(fit * fit)), _TINY) + _TINY  # least-squares scale
    norm_a = float(np.sum(a * a))
    prev = math.inf
    it = 0
    for it in range(1, max_iter + 1):
        wta, wtw = w.T @ a, w.T @ w
        if semi:
            h = np.linalg.solve(wtw + _TINY * (np.trace(wtw) + 1.0) * np.eye(rank), wta)
        else:
            _hals_columns(h.T, wta.T, wtw, 0.0, 3)  # H rows are the HALS columns of Hᵀ
        scale = np.linalg.norm(h, axis=1)
        scale[scale < _TINY] = 1.0
        h /= scale[:, None]
        w *= scale
        aht, hht = a @ h.T, h @ h.T
        _hals_columns(w, aht, hht, l1, 3)
        loss = 0.5 * (norm_a - 2.0 * float(np.sum(w * aht)) + float(np.sum((w.T @ w) * hht))) + l1 * float(w.sum())
        if prev - loss <= tol * abs(loss) or loss <= 1e-14 * norm_a:
            break
        prev = loss
    return w, h, it


@register("nmf")
class NMF(TwoFactor):
    """(Semi-)nonnegative matrix factorization ``A ≈ left @ right`` with ``left >= 0``, splice as two layers.

    When A >= 0 both factors are nonnegative (NMF). When A has a negative entry (the usual weight matrix)
    only ``left`` is, and ``right`` is unconstrained (semi-NMF), so every matrix can be factored. ``left``
    is the sparse-able factor: ``l1`` > 0 zeroes entries of it, and ``compressed`` can wrap this operator.

    Args:
        rank: r, in [1, min(m, n)].
        max_iter: HALS iterations, >= 1.
        tol: relative decrease of the objective below which iterations stop, >= 0.
        l1: sparsity penalty on ``left``, >= 0 (0 is plain NMF).
        seed: seed of the initialisation.
    """

    stack_inputs = ("left", "right")  # stored as they are: a next stage in a stack may compress them

    pair = True
    sparse_left = SparseLeft(left="left", right="right", nonnegative=True)

    def __init__(self, rank: int = 8, *, max_iter: int = 200, tol: float = 1e-4, l1: float = 0.0,
                 seed: int = 0) -> None:
        self.rank = rank
        self.max_iter = max_iter
        self.tol = tol
        self.l1 = l1
        self.seed = seed

    def check(self, m: int | None = None, n: int | None = None) -> None:
        limit = min(m, n) if m is not None and n is not None else math.inf
        check_int("rank", self.rank, 1, limit, shape=f"{m}x{n}" if m is not None else "")
        check_int("max_iter", self.max_iter, 1)
        _check_real("tol", self.tol)
        _check_real("l1", self.l1)
        check_int("seed", self.seed, 0)

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        return {"left": FactorSpec((m, self.rank)), "right": FactorSpec((self.rank, n))}

    def _factor(self, a: np.ndarray) -> Factors:
        w, h, _ = nmf(a, self.rank, max_iter=self.max_iter, tol=self.tol, l1=self.l1, seed=self.seed)
        return {"left": w, "right": h}

    def refit_right(self, a: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The best ``right`` (r x n) for ``a`` (m x n) given ``left`` (m x r), starting from ``right``.

        Nonnegative least squares by 20 HALS sweeps when ``a >= 0``, else exact least squares (semi-NMF).
        The `compressed` operator calls it after recovering ``left`` from a sketch.
        """
        a = np.asarray(a, np.float64)
        left = np.asarray(left, np.float64)
        wta, wtw = left.T @ a, left.T @ left
        if np.any(a < 0):
            return np.linalg.solve(wtw + _TINY * (np.trace(wtw) + 1.0) * np.eye(len(wtw)), wta)
        h = np.maximum(np.asarray(right, np.float64), 0.0)
        _hals_columns(h.T, wta.T, wtw, 0.0, 20)
        return h

