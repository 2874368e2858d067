"""Batch orthogonal matching pursuit: sparse codes of many rows against one dictionary, vectorised in NumPy.

Pure NumPy (no TensorFlow), reusable by any operator that needs a sparse-coding step.
"""

from __future__ import annotations

import numpy as np

_DEPENDENT = 1e-10
"""An atom whose squared distance to the span of the atoms already chosen is below this (relative to its
squared norm) is linearly dependent on them: it gets the value 0 instead of an unstable coefficient."""
_GEMM_ROWS = 16384
"""Rows whose correlations with the atoms one matrix product computes at once."""


def batch_omp(x: np.ndarray, dictionary: np.ndarray, n_nonzero: int, *,
              batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Greedy ``n_nonzero``-sparse codes of every row of ``x`` over the rows (atoms) of ``dictionary``.

    Batch-OMP in Gram form (Rubinstein, Zibulevsky and Elad, 2008): ``G = D Dᵀ`` and the correlations
    ``x Dᵀ`` are computed once; each of the ``n_nonzero`` greedy steps then works on all rows of a batch at
    once. Per row it keeps the inverse ``R`` of the Cholesky factor of ``G`` on the chosen atoms, so that
    ``u_s = Σ_i R[s, i] d_{I_i}`` are orthonormal; the residual correlations drop by ``c_s * D u_s`` at each
    step and the least-squares values are ``Rᵀ c``. Cost per row: O(n_nonzero² * atoms), no loop over rows.

    Args:
        x: signals, shape (N, n).
        dictionary: atoms, shape (K, n); rows of any non-zero norm (zero rows are never used).
        n_nonzero: S, atoms per row, in [1, K].
        batch_size: rows coded together; bounds the memory at about ``batch_size * S * K`` floats.

    Returns:
        ``indices`` (N, S) int64, distinct atoms within a row, in the order chosen, and ``values`` (N, S)
        float64, the least-squares coefficients of ``x`` on those atoms, so that
        ``x[r] ≈ Σ_j values[r, j] * dictionary[indices[r, j]]``. An atom chosen after the row is already
        spanned exactly (or one dependent on the chosen atoms) gets the value 0.

    Raises:
        ValueError: shapes disagree or ``n_nonzero`` is outside [1, K].
    """
    x = np.asarray(x)
    d = np.asarray(dictionary, np.float64)
    if x.ndim != 2 or d.ndim != 2 or x.shape[1] != d.shape[1]:
        raise ValueError(f"batch_omp: x {x.shape} and dictionary {d.shape} must be (N, n) and (K, n).")
    if not 1 <= n_nonzero <= d.shape[0]:
        raise ValueError(f"batch_omp: n_nonzero must be in [1, {d.shape[0]}], but got n_nonzero={n_nonzero}.")
    norms = np.linalg.norm(d, axis=1)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    unit = d * inv[:, None]
    gram = unit @ unit.T
    unit32 = unit.astype(np.float32)
    indices = np.zeros((len(x), n_nonzero), np.int64)
    values = np.zeros((len(x), n_nonzero), np.float64)
    block = max(batch_size, _GEMM_ROWS)
    for first in range(0, len(x), block):  # one large GEMM per block: few BLAS thread hand-offs
        xb = np.asarray(x[first:first + block], np.float64)
        alpha = xb.astype(np.float32) @ unit32.T
        for start in range(0, len(xb), batch_size):
            stop = start + batch_size
            idx, val = _omp_chunk(xb[start:stop], alpha[start:stop], unit, gram, n_nonzero)
            indices[first + start:first + start + len(idx)] = idx
            values[first + start:first + start + len(idx)] = val * inv[idx]
    return indices, values


def _omp_chunk(x: np.ndarray, alpha: np.ndarray, unit: np.ndarray, gram: np.ndarray,
               s_max: int) -> tuple[np.ndarray, np.ndarray]:
    """OMP of the B rows of ``x`` (B, n) over unit-norm atoms ``unit`` (K, n) with Gram matrix (K, K).

    ``alpha`` (B, K) float32 holds ``x @ unitᵀ`` on entry and is overwritten: it tracks the residual's
    correlations that drive the greedy choice (the bulk of the work, hence float32). The coefficients come
    from exact float64 inner products ``x · d``, so float32 drift never reaches them.

    Returns:
        indices (B, S) and values (B, S) over the unit-norm atoms.
    """
    b, k = len(x), len(unit)
    rows = np.arange(b)
    r_inv = np.zeros((b, s_max, s_max))  # R = L⁻¹, lower triangular, per row
    xd = np.zeros((b, s_max))  # x · d for the chosen atoms
    coef = np.zeros((b, s_max))  # c: coefficients on the orthonormal u_s
    idx = np.zeros((b, s_max), np.int64)
    chosen = np.zeros((b, s_max, k), np.float32)  # G rows of the chosen atoms
    score = np.empty_like(alpha)
    diag = np.diag(gram)
    for s in range(s_max):
        np.abs(alpha, out=score)
        if s:
            score[rows[:, None], idx[:, :s]] = -1.0
        pick = score.argmax(1)
        idx[:, s] = pick
        chosen[:, s] = gram[pick]
        w = np.einsum("bij,bj->bi", r_inv[:, :s, :s], gram[pick[:, None], idx[:, :s]])  # L⁻¹ G[I, pick]
        dist2 = diag[pick] - (w * w).sum(1)
        ok = dist2 > _DEPENDENT * np.maximum(diag[pick], 1e-300)
        scale = np.where(ok, 1.0 / np.sqrt(np.where(ok, dist2, 1.0)), 0.0)
        r_inv[:, s, :s] = -np.einsum("bi,bij->bj", w, r_inv[:, :s, :s]) * scale[:, None]
        r_inv[:, s, s] = scale
        xd[:, s] = np.einsum("bn,bn->b", x, unit[pick])
        c = np.einsum("bi,bi->b", r_inv[:, s, :s + 1], xd[:, :s + 1])
        coef[:, s] = c
        if s + 1 < s_max:  # residual correlations: alpha -= c_s * G u_s
            r_row = r_inv[:, s, None, :s + 1] * c[:, None, None]
            alpha -= np.einsum("bi,bik->bk", r_row[:, 0].astype(np.float32), chosen[:, :s + 1])
    return idx, np.einsum("bji,bj->bi", r_inv, coef)
