"""Compressed-sensing pieces of compressed factorization (Sharan, Tai, Bailis and Valiant, arXiv 1706.08146).

A sparse binary expander P (d x m, exactly s ones per column) sketches A = W H as ``P A = (P W) H``; a
factorization of the small sketch gives ``P W`` and H, and W is recovered column by column by sparse
recovery from ``P W``. Operators opt in with the `SparseLeft` hook; ``compressed`` does the rest.

Pure NumPy plus ``scipy.sparse`` (installed with scikit-learn) for the expander products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_CHUNK = 4096


@dataclass(frozen=True)
class SparseLeft:
    """The hook: an operator class sets ``sparse_left = SparseLeft(...)`` to be wrappable by ``compressed``.

    It declares that A (m x n) ≈ L @ R with a sparse L (m x k) and says how L is recovered from its sketch
    ``P L`` (see `recover_sparse`). ``compressed`` runs the operator on the sketch ``P A`` (d x n), takes
    ``P L`` (d x k) and R from those factors, recovers L, optionally refits R on A, and builds the factors of
    A from L and R. By default L and R are the factors named ``left`` and ``right`` (dense, in the
    operator's `specs`); an operator whose factors hold them differently defines some of these methods:

    - ``factor_sketch(sketch, *, fan_in) -> Factors``: factor the (d x n) sketch (default: ``factor``), e.g.
      without a sparsity constraint that holds for L but not for ``P L``; ``fan_in`` (float) is ``m * s / d``,
      the mean number of rows of A that one sketch row sums.
    - ``split_sparse_left(factors) -> (L, R)``: dense L (rows x k) and R (k x n) from factors (default:
      ``factors[left], factors[right]``).
    - ``refit_right(a, L, R) -> R``: the best R for A (m x n) given L, starting from R (default: least
      squares); NMF keeps R >= 0 here.
    - ``join_sparse_left(a, L, R) -> Factors``: the factors of A (m x n) in `specs` order (default:
      ``{left: L, right: R}`` plus generated factors), e.g. to re-encode L in a sparse format.

    Attributes:
        left: name of the sparse factor L (m x k) for the defaults.
        right: name of R (k x n) for the defaults.
        nonnegative: True when L >= 0 always: it is recovered by nonnegative least squares, otherwise by
            orthogonal matching pursuit.
    """

    left: str = "left"
    right: str = "right"
    nonnegative: bool = True


def expander_rows(d: int, m: int, s: int, seed: int) -> np.ndarray:
    """Rows of the ones of a random binary expander P (d x m): s distinct rows per column, uniformly.

    Drawn from NumPy's PCG64 stream for ``seed`` in chunks of columns that consume the stream exactly as
    one draw would, so P depends only on (d, m, s, seed).

    Returns:
        int64 array (m, s): column i of P has its ones in rows ``rows[i]``, sorted ascending.
    """
    rng = np.random.default_rng(seed)
    rows = np.empty((m, s), np.int64)
    for start in range(0, m, _CHUNK):
        keys = rng.random((min(_CHUNK, m - start), d))
        pick = np.argpartition(keys, s - 1, axis=1)[:, :s] if s < d else np.argsort(keys, axis=1)
        rows[start:start + len(keys)] = np.sort(pick, axis=1)
    return rows


def expander_matrix(rows: np.ndarray, d: int) -> Any:
    """P as a ``scipy.sparse`` CSR matrix (d x m, float64) from its ``rows`` (m, s) of `expander_rows`."""
    from scipy import sparse

    m, s = rows.shape
    cols = np.repeat(np.arange(m), s)
    return sparse.csr_matrix((np.ones(m * s), (rows.ravel(), cols)), shape=(d, m))


def expander(d: int, m: int, s: int, seed: int) -> np.ndarray:
    """The dense expander P (d x m, float32, entries 0/1, exactly s ones per column) for ``seed``."""
    p = np.zeros((d, m), np.float32)
    rows = expander_rows(d, m, s, seed)
    p[rows, np.arange(m)[:, None]] = 1.0
    return p


def _nonnegative_least_squares(p: Any, y: np.ndarray, *, penalty: np.ndarray | float, mask: np.ndarray | None,
                               x0: np.ndarray | None, max_iter: int, tol: float) -> np.ndarray:
    """``argmin ½‖P X - Y‖²_F + Σ_j penalty_j·ΣX[:, j]`` over X >= 0 (and X = 0 off ``mask``).

    FISTA with adaptive restart (O'Donoghue and Candès, 2015), stopped when an iteration moves X by less
    than ``tol * ‖X‖``.

    Args:
        p: P (d x m), dense or ``scipy.sparse``.
        y: Y (d x k).
        penalty: a scalar or (k,) l1 weights per column.
        mask: optional boolean (m x k): the entries allowed to be nonzero.
        x0: optional start (m x k).

    Returns:
        X (m x k), float64.
    """
    pt = p.T.tocsr() if hasattr(p, "tocsr") else p.T
    step = 1.0 / _lipschitz(p)
    x = np.zeros((p.shape[1], y.shape[1])) if x0 is None else np.array(x0, np.float64)
    z, t = x.copy(), 1.0
    for _ in range(max_iter):
        grad = pt @ (p @ z - y) + penalty
        new = np.maximum(z - step * grad, 0.0)
        if mask is not None:
            new *= mask
        change = new - x
        if np.sum(grad * change) > 0:  # momentum points uphill: restart it
            t = 1.0
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        z = new + ((t - 1.0) / t_new) * change
        x, t = new, t_new
        if np.linalg.norm(change) <= tol * max(float(np.linalg.norm(x)), 1e-300):
            break
    return x


def _lipschitz(p: Any, iters: int = 50) -> float:
    """An upper estimate of ‖P‖₂², the gradient's Lipschitz constant.

    Power iteration (which approaches it from below) with a 5% margin, capped by the bound
    ``‖P‖₂² <= ‖P‖₁ ‖P‖_∞`` (largest absolute column sum times largest absolute row sum).
    """
    absolute = abs(p)
    bound = float(np.max(absolute.sum(axis=0))) * float(np.max(absolute.sum(axis=1)))
    v = np.random.default_rng(0).standard_normal(p.shape[1])
    est = 0.0
    for _ in range(iters):
        v = p.T @ (p @ v)
        est = float(np.linalg.norm(v))
        if est == 0.0:
            return 1.0
        v /= est
    return min(1.05 * est, bound)


def recover_sparse(y: np.ndarray, p: Any, *, nonnegative: bool, nonzeros: int | None = None, l1: float = 0.0,
                   max_iter: int = 1000, tol: float = 1e-4) -> np.ndarray:
    """Recover sparse columns X (m x k) from their sketches ``Y ≈ P X`` (d x k), d < m.

    Nonnegative X: nonnegative least squares. For a binary expander with s ones per column and sparse enough
    X, X is the only nonnegative solution of ``P X = Y`` (Bruckstein, Elad and Zibulevsky, 2008; Khajehnejad
    et al., 2011), so with exact sketches ``l1 = 0`` finds it. With noisy sketches NNLS fits the noise with
    many small entries; ``l1 > 0`` first solves ``min_{X>=0} ½‖P X - Y‖² + λ_j ΣX[:, j]`` with ``λ_j = l1 *
    max(Pᵀ Y[:, j])`` (the smallest penalty that zeroes column j) to choose the support, then re-solves NNLS
    on that support alone to undo the shrinkage (debiasing), both by restarted FISTA.
    Signed X: orthogonal matching pursuit with ``nonzeros`` atoms per column over the columns of P
    (``operators.omp.batch_omp``).

    Args:
        y: the sketches, shape (d, k).
        p: P, shape (d, m), a dense array or ``scipy.sparse`` matrix.
        nonnegative: whether X >= 0.
        nonzeros: signed recovery only: nonzeros per column, in [1, m]; None uses ``d // 4``.
        l1: nonnegative recovery only: the penalty as a fraction of its zeroing value, in [0, 1).
        max_iter: nonnegative recovery only: FISTA iterations per stage.
        tol: nonnegative recovery only: stop a stage when an iteration moves X by less than ``tol * ‖X‖``.

    Returns:
        X, shape (m, k), float64.

    Raises:
        ValueError: the shapes of ``y`` and ``p`` disagree.
    """
    y = np.asarray(y, np.float64)
    if y.ndim != 2 or len(p.shape) != 2 or y.shape[0] != p.shape[0]:
        raise ValueError(f"recover_sparse: y {y.shape} and P {tuple(p.shape)} must be (d, k) and (d, m).")
    if nonnegative:
        if l1 == 0:
            return _nonnegative_least_squares(p, y, penalty=0.0, mask=None, x0=None, max_iter=max_iter, tol=tol)
        penalty = l1 * np.maximum(np.asarray(p.T @ y).max(axis=0), 0.0)
        x = _nonnegative_least_squares(p, y, penalty=penalty, mask=None, x0=None, max_iter=max_iter, tol=tol)
        return _nonnegative_least_squares(p, y, penalty=0.0, mask=x > 0, x0=x, max_iter=max_iter, tol=tol)
    from operators.omp import batch_omp

    dense = np.asarray(p.todense() if hasattr(p, "todense") else p, np.float64)
    k = min(dense.shape[0] // 4, dense.shape[1]) if nonzeros is None else nonzeros
    idx, val = batch_omp(y.T, dense.T, max(int(k), 1))
    x = np.zeros((y.shape[1], dense.shape[1]))
    np.add.at(x, (np.arange(y.shape[1])[:, None], idx), val)
    return x.T
