"""Low-rank factorization by truncated SVD: A (m x n) ≈ left (m x k) @ right (k x n)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from operators._base import FactorSpec, Factors, TwoFactor, check_int
from operators._registry import register

_EXACT_MAX_ELEMENTS = 1_000_000
_METHODS = ("auto", "exact", "randomized")
REFRESH_POWER = 1
"""Power iterations per refresh (`LowRank.refreshed`), after the warm start from the current factors."""


def _orthonormal_tensor(y: Any) -> Any:
    """An orthonormal basis of the span of ``y``'s columns (m x k, k small) in Keras ops: ``y V / sqrt(w)``
    from the eigendecomposition ``V diag(w) V^T`` of its k x k Gram matrix, twice (the second pass restores
    the orthogonality the first loses in float32 when ``y`` is ill-conditioned; directions weaker than 1e-6
    of the strongest eigenvalue are clamped, so a rank-deficient ``y`` gives short columns, never NaN). ``y``
    is first divided by its largest magnitude (the span is the same): the Gram matrix of a diverging layer's
    finite but huge entries (1e17 in a bug hunt's SGD at rate 10) overflowed to Inf, and ``eigh`` raised.
    Not a Householder QR: in a step that refreshes once in 25 steps, XLA on the CPU pays a cold cost on every
    QR (or thin SVD) of 784 x 16 that a 16 x 16 eigh does not (`experiments/bench_refresh_bases.py`)."""
    from keras import ops

    y = y / ops.maximum(ops.max(ops.abs(y)), 1e-30)
    for _ in range(2):
        w, v = ops.eigh(ops.matmul(ops.transpose(y), y))
        floor = ops.maximum(ops.max(w) * 1e-6, 1e-30)
        y = ops.matmul(y, v) / ops.sqrt(ops.maximum(w, floor))
    return y


def randomized_svd(a: np.ndarray, k: int, *, oversample: int = 10, power_iters: int = 4,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` SVD of ``a`` (m x n) by a Gaussian range finder with power iterations (Halko et al. 2011).

    Returns:
        U (m x k), S (k,), Vt (k x n).
    """
    rng = np.random.default_rng(seed)
    m, n = a.shape
    p = min(k + oversample, m, n)
    q = a @ rng.standard_normal((n, p)).astype(a.dtype)
    for _ in range(power_iters):  # re-orthonormalise each pass to keep small singular directions
        q, _ = np.linalg.qr(q)
        q, _ = np.linalg.qr(a.T @ q)
        q = a @ q
    q, _ = np.linalg.qr(q)
    ub, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ ub)[:, :k], s[:k], vt[:k]


def _signed_split(u: np.ndarray, s: np.ndarray, vt: np.ndarray) -> dict[str, np.ndarray]:
    """``left = U√S``, ``right = √S Vᵀ`` with each singular pair's sign fixed (largest |entry| of u positive):
    with `refresh`, successive factorizations then agree in sign and an optimizer's per-entry state stays
    meaningful."""
    flip = np.sign(u[np.abs(u).argmax(0), np.arange(u.shape[1])])
    flip[flip == 0] = 1.0
    root = np.sqrt(s)
    return {"left": u * flip * root, "right": (flip * root)[:, None] * vt}


@register("low_rank")
class LowRank(TwoFactor):
    """Truncated SVD; the singular values are split evenly, ``left = U√S`` and ``right = √S Vᵀ``.

    Args:
        rank: the kept rank k, in [1, min(m, n)]. Exactly one of ``rank`` and ``ratio`` is given.
        ratio: a target compression ratio m*n / (k*(m+n)) >= 1; the rank is the largest one that reaches it.
        method: ``"exact"`` (LAPACK SVD), ``"randomized"``, or ``"auto"``: exact up to 10^6 elements.
        seed: seed of the randomized range finder.
    """

    stack_inputs = ("left", "right")  # stored as they are: a next stage in a stack may compress them

    pair = True

    def __init__(self, rank: int | None = None, *, ratio: float | None = None, method: str = "auto",
                 seed: int = 0) -> None:
        self.rank = rank
        self.ratio = ratio
        self.method = method
        self.seed = seed

    def check(self, m: int | None = None, n: int | None = None) -> None:
        if (self.rank is None) == (self.ratio is None):
            raise ValueError(f"low_rank takes exactly one of `rank` and `ratio`, but got rank={self.rank!r}, "
                             f"ratio={self.ratio!r}.")
        if self.rank is not None:
            limit = min(m, n) if m is not None and n is not None else math.inf
            check_int("rank", self.rank, 1, limit, shape=f"{m}x{n}" if m is not None else "")
        else:
            r = self.ratio
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r < 1:
                raise ValueError(f"`ratio` must be a finite number >= 1, but got ratio={r!r}.")
            if m is not None and n is not None and self.rank_for(m, n) < 1:
                raise ValueError(f"`ratio` is unreachable for a {m}x{n} matrix even at rank 1, but got ratio={r!r}.")
        if self.method not in _METHODS:
            raise ValueError(f"`method` must be one of {_METHODS}, but got method={self.method!r}.")
        check_int("seed", self.seed, 0)

    def rank_for(self, m: int, n: int) -> int:
        """The rank used for an (m, n) matrix."""
        if self.rank is not None:
            return int(self.rank)
        return min(int(m * n / (float(self.ratio) * (m + n))), m, n)

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        k = self.rank_for(m, n)
        return {"left": FactorSpec((m, k)), "right": FactorSpec((k, n))}

    def _factor(self, a: np.ndarray) -> Factors:
        m, n = a.shape
        k = self.rank_for(m, n)
        exact = self.method == "exact" or (self.method == "auto" and m * n <= _EXACT_MAX_ELEMENTS)
        if exact:
            u, s, vt = np.linalg.svd(a.astype(np.float64), full_matrices=False)
            u, s, vt = u[:, :k], s[:k], vt[:k]
        else:
            u, s, vt = randomized_svd(a, k, seed=self.seed)
        return _signed_split(u, s, vt)

    # -- refresh: a warm-started subspace iteration, the same in NumPy and in the training graph -----------
    def refreshed(self, a: np.ndarray, factors: Mapping[str, np.ndarray]) -> Factors:
        """The rank-k SVD of A restricted to the subspace ``REFRESH_POWER`` power iterations find from the
        current ``right`` factor's rows (A moves little between two updates, so this tracks the exact
        truncated SVD at two small matmuls per iteration); signs fixed and the singular values split as in
        `factor`."""
        a = self.checked_matrix(a)  # factor's checks: NaN/Inf here was LAPACK's "SVD did not converge"
        right = np.asarray(factors["right"], np.float32)
        if right.ndim != 2 or right.shape[1] != a.shape[1]:
            raise ValueError(f"{self.name}: cannot refresh a {a.shape[0]}x{a.shape[1]} matrix from a `right` "
                             f"factor of shape {right.shape}.")
        q = np.linalg.qr(a @ right.T)[0]
        for _ in range(REFRESH_POWER):
            q = np.linalg.qr(a @ (a.T @ q))[0]
        ub, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
        return {k: v.astype(np.float32) for k, v in _signed_split(q @ ub, s, vt).items()}

    def refreshed_tensor(self, a: Any, factors: Mapping[str, Any]) -> dict[str, Any]:
        """`refreshed` in Keras ops; the bases come from `_orthonormal_tensor`, not a QR (the same subspace;
        the result depends only on it)."""
        from keras import ops

        q = _orthonormal_tensor(ops.matmul(a, ops.transpose(factors["right"])))
        for _ in range(REFRESH_POWER):
            q = _orthonormal_tensor(ops.matmul(a, ops.matmul(ops.transpose(a), q)))
        ub, s, vt = ops.svd(ops.matmul(ops.transpose(q), a), full_matrices=False)
        u = ops.matmul(q, ub)
        pick = ops.take_along_axis(u, ops.expand_dims(ops.argmax(ops.abs(u), axis=0), 0), axis=0)[0]
        flip = ops.where(pick < 0, -1.0, 1.0)
        root = ops.sqrt(ops.maximum(s, 0.0))
        return {"left": u * (flip * root), "right": ops.expand_dims(flip * root, 1) * vt}

