"""Dictionary learning: A (m x n) ≈ codes (m x atoms, n_nonzero per row) @ dictionary (atoms x n).

Learning alternates batch OMP (`operators.omp.batch_omp`) with an approximate K-SVD sweep over unit-norm
atoms; `balance` then rescales each atom against its codes for training.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Mapping

import numpy as np

from operators._base import Compressor, FactorSpec, Factors, check_int, take_rows
from operators._bits import code_bits, pack_codes, packed_bytes, unpack_codes
from operators._registry import register
from operators.kmeans import code_dtype
from operators.omp import batch_omp
from operators.sketching import SparseLeft


def initial_dictionary(a: np.ndarray, atoms: int, seed: int) -> np.ndarray:
    """Distinct random non-zero rows of ``a`` (m x n), normalised; random unit vectors when rows run out.

    Returns:
        float64 array of shape (atoms, n) with unit-norm rows.
    """
    rng = np.random.default_rng(seed)
    norms = np.linalg.norm(a, axis=1)
    candidates = np.flatnonzero(norms > 0)
    take = rng.permutation(candidates)[:atoms]
    filler = rng.standard_normal((atoms - len(take), a.shape[1]))
    d = np.concatenate([a[take].astype(np.float64), filler])
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def sparse_product(indices: np.ndarray, values: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """``Σ_j values[:, j, None] * dictionary[indices[:, j]]``: (m, S), (m, S), (K, n) -> (m, n)."""
    out = np.zeros((indices.shape[0], dictionary.shape[1]), np.result_type(values, dictionary))
    for j in range(indices.shape[1]):
        out += values[:, j, None] * dictionary[indices[:, j]]
    return out


def ksvd_sweep(a: np.ndarray, indices: np.ndarray, values: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """One approximate K-SVD pass (Rubinstein et al. 2008) over the used atoms, in place, on a fixed support.

    Atom by atom, with the atom's own contribution added back to the residual ``E`` of the rows that use
    it, the atom becomes the normalised ``Eᵀ g`` and its values ``g`` become ``E d`` (one rank-1 power step).
    Atoms that no row uses (all their values are zero) are left as they are.

    Args:
        a: the matrix, (m, n) float64.
        indices: (m, S) atom indices, distinct within a row.
        values: (m, S) float64 values, updated in place.
        dictionary: (K, n) float64 unit rows, updated in place.

    Returns:
        The residual ``a - codes @ dictionary`` after the pass, (m, n) float64.
    """
    if not values.flags.c_contiguous:
        raise ValueError("ksvd_sweep updates `values` in place and needs a C-contiguous array.")
    s = indices.shape[1]
    residual = a - sparse_product(indices, values, dictionary)
    order = np.argsort(indices, axis=None, kind="stable")
    bounds = np.searchsorted(indices.ravel()[order], np.arange(dictionary.shape[0] + 1))
    flat_values = values.reshape(-1)
    for atom in range(dictionary.shape[0]):
        pos = order[bounds[atom]:bounds[atom + 1]]
        g = flat_values[pos]
        if not g.any():
            continue
        rows = pos // s
        e = residual[rows]
        e += g[:, None] * dictionary[atom]
        d = g @ e
        norm = math.sqrt(d @ d)
        if norm == 0.0:
            continue
        d /= norm
        g = e @ d
        e -= g[:, None] * d
        residual[rows] = e
        dictionary[atom] = d
        flat_values[pos] = g
    return residual


def replace_atoms(dictionary: np.ndarray, indices: np.ndarray, values: np.ndarray, residual: np.ndarray,
                  coherence: float = 0.95) -> None:
    """Replace unused atoms, and atoms within ``coherence`` of an earlier atom, in place.

    Each replaced atom becomes the normalised residual of one of the worst-represented rows (largest
    residual norm first), a standard K-SVD remedy that moves idle atoms to where the error is.

    Args:
        dictionary: (K, n) unit rows, updated in place.
        indices: (m, S) atom indices of the current codes.
        values: (m, S) their values; an atom is used when a value on it is non-zero.
        residual: (m, n), ``a`` minus the codes' product.
        coherence: |cosine| above which the later atom of a pair counts as a duplicate.
    """
    used = np.zeros(dictionary.shape[0], bool)
    used[indices[values != 0]] = True
    similar = np.triu(np.abs(dictionary @ dictionary.T), 1) > coherence
    bad = np.flatnonzero(~used | similar.any(0))
    if not len(bad):
        return
    err = np.einsum("ij,ij->i", residual, residual)
    worst = np.argsort(-err, kind="stable")[:len(bad)]
    bad = bad[:len(worst)]  # more atoms than rows: the rest stay as they are
    keep = err[worst] > 0
    dictionary[bad[keep]] = residual[worst[keep]] / np.sqrt(err[worst[keep]])[:, None]


def balance(values: np.ndarray, indices: np.ndarray, dictionary: np.ndarray) -> None:
    """Rescale each atom and the values on it, in place, to equal RMS; the product does not change.

    Learned atoms have unit norm, so an atom of width n holds elements near 1/sqrt(n) while its values can
    be in the tens (a 10000-wide softmax kernel: elements <= 0.13 against values up to 18.6). Adam moves every
    element by about its learning rate, which then swamps the atoms: on the LSTM LM's softmax
    (`experiments/lm_comparison.py`) perplexity was 169.7 / 177.6 with unit atoms and 137.5 / 142.3
    balanced; on the 512-wide LSTM input kernel balancing cost 2-3% (139.8 / 140.2 against 143.3 / 144.6),
    hence the ``balance`` switch. Atom k is multiplied by
    ``c = sqrt(rms(g) * sqrt(n))`` and its values ``g`` divided by ``c`` (the elements of both then have RMS
    ``sqrt(rms(g) / sqrt(n))``); an atom whose values are all zero keeps its scale.

    Args:
        values: (m, S) values, updated in place.
        indices: (m, S) atom indices.
        dictionary: (K, n) atoms, updated in place.
    """
    flat = indices.reshape(-1).astype(np.int64)
    sq = values.reshape(-1).astype(np.float64) ** 2
    count = np.bincount(flat, weights=(sq > 0).astype(np.float64), minlength=len(dictionary))
    total = np.bincount(flat, weights=sq, minlength=len(dictionary))
    rms_values = np.sqrt(total / np.maximum(count, 1.0))
    rms_atoms = np.linalg.norm(dictionary, axis=1) / math.sqrt(dictionary.shape[1])
    scale = np.ones(len(dictionary))
    ok = (rms_values > 0) & (rms_atoms > 0)
    scale[ok] = np.sqrt(rms_values[ok] / rms_atoms[ok])
    dictionary *= scale[:, None].astype(dictionary.dtype)
    values /= scale[indices.astype(np.int64)].astype(values.dtype)


def one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """A context limiting BLAS to one thread (threadpoolctl, a scikit-learn dependency), else a no-op.

    Learning makes thousands of small BLAS calls between NumPy element-wise passes; idle BLAS workers
    spin-wait after each call and take a core from the main thread, which halves the speed on a busy
    2-core machine and gains nothing on an idle one.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def learn(a: np.ndarray, atoms: int, n_nonzero: int, *, max_iter: int,
          seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Learn a dictionary and sparse codes of ``a`` (m x n), ``max_iter`` rounds of K-SVD then OMP.

    Returns:
        indices (m, S) int64, values (m, S) float64 and dictionary (K, n) float64 with unit rows.
    """
    with one_blas_thread():
        return _learn(a, atoms, n_nonzero, max_iter=max_iter, seed=seed)


def _learn(a: np.ndarray, atoms: int, n_nonzero: int, *, max_iter: int,
           seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a64 = a.astype(np.float64)
    dictionary = initial_dictionary(a64, atoms, seed)
    indices, values = batch_omp(a64, dictionary, n_nonzero)
    for _ in range(max_iter):
        residual = ksvd_sweep(a64, indices, values, dictionary)
        replace_atoms(dictionary, indices, values, residual)
        indices, values = batch_omp(a64, dictionary, n_nonzero)
    return indices, values, dictionary


@register("dictionary")
class Dictionary(Compressor):
    """Sparse coding over a learned dictionary: row r of A ≈ Σ_j values[r, j] * dictionary[indices[r, j]].

    Learning starts from random rows of A and alternates batch OMP with approximate K-SVD sweeps
    (`learn`), then, with ``balance``, rescales each atom and its values to equal RMS (`balance`). Blending
    factors: ``indices`` (m x n_nonzero, the smallest unsigned integer type that holds ``atoms``, fixed),
    ``values`` (m x n_nonzero, trainable) and ``dictionary`` (atoms x n, trainable): the support stays fixed
    while training moves the values and the atoms. A spliced layer stores the indices
    bit-packed at ceil(log2 atoms) bits, the values and the dictionary:
    ``8*ceil(m*n_nonzero*ceil(log2 atoms)/8) + 32*m*n_nonzero + 32*atoms*n`` bits. An Embedding gathers only
    the looked-up rows' codes; a Dense multiplies by the (m, n) product built once per call.

    Args:
        atoms: K, the number of dictionary rows (>= 1).
        n_nonzero: S, atoms per row of A, in [1, min(atoms, n)].
        max_iter: rounds of K-SVD sweep then OMP after the first OMP (0 keeps the initial atoms).
        seed: seed of the choice of initial atoms.
        balance: rescale each learned atom and its values to equal RMS (same product), so that Adam's
            per-element steps suit both factors. False returns unit-norm atoms.
    """

    sparse_left = SparseLeft(left="codes", right="dictionary", nonnegative=False)
    """``compressed`` can wrap it: L is the dense (m x atoms) code matrix, R the dictionary; L is recovered by
    OMP. The factor names here are nominal: the hook methods below translate to and from the real factors."""

    def __init__(self, atoms: int = 256, *, n_nonzero: int = 4, max_iter: int = 10, seed: int = 0,
                 balance: bool = True) -> None:
        self.atoms = atoms
        self.n_nonzero = n_nonzero
        self.max_iter = max_iter
        self.seed = seed
        self.balance = balance

    def check(self, m: int | None = None, n: int | None = None) -> None:
        check_int("atoms", self.atoms, 1)
        check_int("n_nonzero", self.n_nonzero, 1)
        if self.n_nonzero > self.atoms:
            raise ValueError(f"`n_nonzero` must be in [1, atoms={self.atoms}], but got n_nonzero={self.n_nonzero}.")
        check_int("max_iter", self.max_iter, 0)
        check_int("seed", self.seed, 0)
        if not isinstance(self.balance, bool):
            raise TypeError(f"`balance` must be true or false, but got balance={self.balance!r}.")
        if m is not None and n is not None:
            check_int("n_nonzero", self.n_nonzero, 1, min(self.atoms, n), shape=f"{m}x{n}")

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        s = self.n_nonzero
        return {"indices": FactorSpec((m, s), code_dtype(self.atoms), trainable=False),
                "values": FactorSpec((m, s)), "dictionary": FactorSpec((self.atoms, n))}

    def _factor(self, a: np.ndarray) -> Factors:
        indices, values, dictionary = learn(a, self.atoms, self.n_nonzero, max_iter=self.max_iter, seed=self.seed)
        return self._finish(indices, values, dictionary)

    def _finish(self, indices: np.ndarray, values: np.ndarray, dictionary: np.ndarray) -> Factors:
        """The factors, balanced when ``balance`` is set (`balance`)."""
        if self.balance:
            balance(values, indices, dictionary)
        return {"indices": indices, "values": values, "dictionary": dictionary}

    # -- the `SparseLeft` hook, used by the ``compressed`` operator --------------------------------------------
    def sketch_nonzero(self, n: int, fan_in: float) -> int:
        """Atoms per row used to code a sketch row that sums ``fan_in`` rows of A (each ``n_nonzero``-sparse).

        ``min(atoms, n, n_nonzero * ceil(fan_in))``: the codes of a sum of ``fan_in`` rows may use up to that
        many atoms, and more than ``n`` (or ``atoms``) atoms never help a least-squares fit.
        """
        return int(max(1, min(self.atoms, n, self.n_nonzero * math.ceil(max(fan_in, 1.0)))))

    def factor_sketch(self, sketch: np.ndarray, *, fan_in: float = 1.0) -> Factors:
        """Learn the dictionary on the (d x n) sketch ``P A`` with `sketch_nonzero` atoms per row.

        Args:
            sketch: ``P A``, shape (d, n).
            fan_in: the mean number of rows of A that one sketch row sums (``m * s / d``).

        Returns:
            ``indices`` and ``values`` of shape (d, `sketch_nonzero`) and the ``dictionary`` (atoms, n), as
            `split_sparse_left` reads them (not in `specs` shape: the codes are wider than ``n_nonzero``).
        """
        sketch = np.asarray(sketch, np.float64)
        nonzero = self.sketch_nonzero(sketch.shape[1], fan_in)
        indices, values, dictionary = learn(sketch, self.atoms, nonzero, max_iter=self.max_iter, seed=self.seed)
        return {"indices": indices, "values": values, "dictionary": dictionary}

    def split_sparse_left(self, factors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The dense codes (rows x atoms, float64) and the dictionary (atoms x n) of ``factors``."""
        indices = np.asarray(factors["indices"]).astype(np.int64)
        values = np.asarray(factors["values"], np.float64)
        codes = np.zeros((len(indices), self.atoms))
        np.add.at(codes, (np.arange(len(indices))[:, None], indices), values)
        return codes, np.asarray(factors["dictionary"], np.float64)

    def join_sparse_left(self, a: np.ndarray, left: np.ndarray, right: np.ndarray) -> Factors:
        """Normal ``dictionary`` factors of A (m x n): the atoms of ``right``, A re-encoded over them by OMP.

        The rows of ``right`` are normalised to unit norm (an all-zero or non-finite row, e.g. an atom that no
        recovered code uses, is replaced by the row `initial_dictionary` would start from) and every row of A
        is then coded with exactly ``n_nonzero`` atoms by `batch_omp` (one pass over A). The recovered codes
        ``left`` are not used to choose the support: a recovered row of L is neither ``n_nonzero``-sparse nor
        optimal for the atoms; they reach the result only through ``right`` when ``compressed`` refits it
        (``refit=True``, least squares of A on ``left``).

        Args:
            a: the full matrix, shape (m, n).
            left: the recovered codes, shape (m, atoms); unused (see above).
            right: the dictionary, shape (atoms, n).

        Returns:
            ``indices`` (m, n_nonzero), ``values`` (m, n_nonzero) and ``dictionary`` (atoms, n): unit rows,
            then balanced as in `factor` when ``balance`` is set.
        """
        del left
        a64 = np.asarray(a, np.float64)
        dictionary = np.array(right, np.float64)
        norms = np.linalg.norm(dictionary, axis=1)
        finite = np.isfinite(norms)
        largest = float(np.max(norms[finite], initial=0.0))
        bad = ~finite | (norms <= 1e-12 * max(largest, 1e-300))
        norms[bad] = 1.0
        dictionary /= norms[:, None]
        if bad.any():
            dictionary[bad] = initial_dictionary(a64, self.atoms, self.seed)[bad]
        with one_blas_thread():
            indices, values = batch_omp(a64, dictionary, self.n_nonzero)
        return self._finish(indices, values, dictionary)

    @staticmethod
    def _combine(indices: Any, values: Any, dictionary: Any) -> Any:
        """Σ_j values[..., j, None] * dictionary[indices[..., j]]: (..., S), (..., S), (K, n) -> (..., n).

        A batched matmul, not a broadcast product summed over S: on constant factors (a stack's values,
        folded for LiteRT) TensorFlow's converter crashed the process (SIGSEGV) folding the gather-then-sum,
        or folded it into wrong values; it folds the einsum correctly."""
        from keras import ops

        atoms = take_rows(dictionary, ops.cast(indices, "int32"))  # (..., S, n)
        return ops.einsum("...s,...sn->...n", ops.cast(values, atoms.dtype), atoms)

    def product(self, factors: Mapping[str, Any]) -> Any:
        return self._combine(factors["indices"], factors["values"], factors["dictionary"])

    def matmul(self, x: Any, factors: Mapping[str, Any]) -> Any:
        """``x @ (codes @ dictionary)`` as ``(x @ codes) @ dictionary``, the sparse codes scattered into an
        (m, atoms) matrix, when that is cheaper than forming the m x n product (atoms * (m + n) < m * n;
        LeNet's 784x300 at 32 atoms: 2.05x of the dense layer's training step -> see bench_spliced)."""
        from keras import ops

        values, dictionary = factors["values"], factors["dictionary"]
        m, s = (int(d) for d in values.shape)
        atoms, n = (int(d) for d in dictionary.shape)
        if atoms * (m + n) >= m * n:
            return ops.matmul(x, self.product(factors))
        rows = ops.convert_to_tensor(np.repeat(np.arange(m, dtype=np.int32), s)[:, None])
        where = ops.concatenate([rows, ops.reshape(ops.cast(factors["indices"], "int32"), (m * s, 1))], axis=1)
        codes = ops.scatter(where, ops.reshape(values, (m * s,)), (m, atoms))  # duplicates would sum, as in product
        return ops.matmul(ops.matmul(x, ops.cast(codes, x.dtype)), ops.cast(dictionary, x.dtype))

    def gather(self, ids: Any, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        indices = ops.take(ops.cast(factors["indices"], "int32"), ids, axis=0)  # ids.shape + (S,)
        values = take_rows(factors["values"], ids)
        return self._combine(indices, values, factors["dictionary"])

    def packed_specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        count = m * self.n_nonzero
        return {"indices": FactorSpec((packed_bytes(count, code_bits(self.atoms)),), "uint8", trainable=False),
                "values": FactorSpec((m, self.n_nonzero)), "dictionary": FactorSpec((self.atoms, n))}

    def pack(self, factors: Factors) -> Factors:
        return {"indices": pack_codes(factors["indices"], code_bits(self.atoms)),
                "values": np.asarray(factors["values"], np.float32),
                "dictionary": np.asarray(factors["dictionary"], np.float32)}

    def unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        from keras import ops

        indices = unpack_codes(packed["indices"], m * self.n_nonzero, code_bits(self.atoms))
        return {"indices": ops.reshape(indices, (m, self.n_nonzero)), "values": packed["values"],
                "dictionary": packed["dictionary"]}

    # -- in a stack: the values (m, n_nonzero) that the next stage compresses ------------------------------
    stack_inputs = ("values",)

    def stack_pack(self, factors: Factors) -> Factors:
        out = {"indices": pack_codes(factors["indices"], code_bits(self.atoms)),
               "dictionary": np.asarray(factors["dictionary"], np.float32)}
        if "values" in factors:
            out["values"] = np.asarray(factors["values"], np.float32)
        return out

    def stack_unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        from keras import ops

        indices = unpack_codes(packed["indices"], m * self.n_nonzero, code_bits(self.atoms))
        out = {"indices": ops.reshape(indices, (m, self.n_nonzero)), "dictionary": packed["dictionary"]}
        if "values" in packed:
            out["values"] = packed["values"]
        return out

    def streams(self, factors: Factors) -> dict[str, tuple[np.ndarray, int]]:
        return {"indices": (np.asarray(factors["indices"]).ravel(), self.atoms)}
