"""Compressed factorization: factor a sketch ``P A`` of A, then recover the sparse left factor (arXiv 1706.08146).

For A = W H with sparse W (m x k), the sketch ``P A = (P W) H`` by a random binary expander P (d x m, s
ones per column, regenerated from ``seed`` and never stored) is d/m as tall. The wrapped operator factors
the sketch into ``P W`` and H; W is then recovered column by column by sparse recovery, so the slow
factorization runs on d rows instead of m. The factors, their specs, product and packing are exactly the
wrapped operator's for the full (m x n) matrix.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from operators import _registry
from operators._base import Compressor, FactorSpec, Factors, check_fraction, check_int
from operators._registry import register
from operators.sketching import SparseLeft, expander_matrix, expander_rows, recover_sparse


def supported() -> list[str]:
    """Sorted names of the registered operators that declare a `SparseLeft` hook (``compressed`` can wrap)."""
    classes = {name: _registry._REGISTRY[name] for name in _registry.available()}
    return [name for name, cls in classes.items() if isinstance(getattr(cls, "sparse_left", None), SparseLeft)]


@register("compressed")
class Compressed(Compressor):
    """Runs ``base`` on the sketch ``P A`` and recovers its sparse left factor (see `operators.sketching`).

    Args:
        base: name of the wrapped operator; it must declare ``sparse_left`` (see `supported`).
        base_params: its parameters, e.g. ``{"rank": 10}``.
        sketch_dim: d, rows of the sketch, in [1, m]; the base operator must be able to factor a d x n matrix.
        column_nonzeros: s, ones per column of P, in [1, d].
        seed: seed of P.
        recovery_l1: nonnegative recovery: l1 penalty choosing the support, as a fraction in [0, 1) of the
            penalty that would zero the column (see `recover_sparse`); 0 is plain nonnegative least squares.
        recovery_nonzeros: nonzeros per column of signed recovery (OMP), in [1, m]; None means d // 4.
        recovery_iter: nonnegative recovery: FISTA iterations per stage, >= 1.
        refit: after recovery, refit ``right`` to the full A given the recovered ``left`` (one pass over A),
            by the base operator's ``refit_right(a, left, right)`` when it has one, else by least squares.
            False keeps the sketch's ``right``, as in the paper (where A itself is never seen).
    """

    def __init__(self, base: str = "nmf", *, base_params: Mapping[str, Any] | None = None, sketch_dim: int = 64,
                 column_nonzeros: int = 4, seed: int = 0, recovery_l1: float = 0.05,
                 recovery_nonzeros: int | None = None, recovery_iter: int = 1000,
                 refit: bool = True) -> None:
        self.base = base
        self.base_params = base_params
        self.sketch_dim = sketch_dim
        self.column_nonzeros = column_nonzeros
        self.seed = seed
        self.recovery_l1 = recovery_l1
        self.recovery_nonzeros = recovery_nonzeros
        self.recovery_iter = recovery_iter
        self.refit = refit

    # -- the wrapped operator ------------------------------------------------------------------------------
    def base_operator(self) -> Compressor:
        """The wrapped operator (built once, after `check` validated its name and parameters)."""
        cached = self.__dict__.get("_base_op")
        key = (self.base, repr(self.base_params))
        if cached is None or cached[0] != key:
            cached = (key, _registry.get(self.base, **dict(self.base_params or {})))
            self.__dict__["_base_op"] = cached
        return cached[1]

    @property
    def pair(self) -> bool:  # type: ignore[override]
        """The wrapped operator's ``pair``: its factors, so its splice."""
        return self.base_operator().pair

    @property
    def generated(self) -> tuple[str, ...]:  # type: ignore[override]
        """The wrapped operator's generated factors."""
        return self.base_operator().generated

    def check(self, m: int | None = None, n: int | None = None) -> None:
        if not isinstance(self.base, str) or self.base not in _registry.available():
            raise ValueError(f"`base` must be a registered operator name, one of {supported()}, but got "
                             f"base={self.base!r}.")
        if self.base_params is not None and not isinstance(self.base_params, Mapping):
            raise TypeError(f"`base_params` must be a dict of the base operator's parameters, but got "
                            f"base_params={self.base_params!r}.")
        hook = getattr(_registry._REGISTRY[self.base], "sparse_left", None)
        if not isinstance(hook, SparseLeft):
            raise ValueError(f"`base` must be an operator whose left factor is sparse (one that declares "
                             f"`sparse_left`): one of {supported()}, but got base={self.base!r}.")
        base = self.base_operator()
        shape = f"{m}x{n}" if m is not None else ""
        check_int("sketch_dim", self.sketch_dim, 1, m if m is not None else math.inf, shape=shape)
        check_int("column_nonzeros", self.column_nonzeros, 1, self.sketch_dim)
        check_int("seed", self.seed, 0)
        check_fraction("recovery_l1", self.recovery_l1)
        if self.recovery_nonzeros is not None:
            check_int("recovery_nonzeros", self.recovery_nonzeros, 1, m if m is not None else math.inf, shape=shape)
        check_int("recovery_iter", self.recovery_iter, 1)
        if not isinstance(self.refit, (bool, np.bool_)):
            raise TypeError(f"`refit` must be a bool, but got refit={self.refit!r}.")
        if m is not None and n is not None:
            base.check(m, n)
            try:
                base.check(self.sketch_dim, n)
            except ValueError as e:
                raise ValueError(f"`sketch_dim` is too small: {self.base} cannot factor the {self.sketch_dim}x{n} "
                                 f"sketch of a {m}x{n} matrix ({e}), with sketch_dim={self.sketch_dim}.") from None

    # -- factoring ---------------------------------------------------------------------------------------------
    def projection(self, m: int) -> Any:
        """The sketch P (sketch_dim x m) as a ``scipy.sparse`` CSR matrix, regenerated from ``seed``."""
        return expander_matrix(expander_rows(self.sketch_dim, m, self.column_nonzeros, self.seed), self.sketch_dim)

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        return self.base_operator().specs(m, n)

    def _factor(self, a: np.ndarray) -> Factors:
        m, n = a.shape
        base = self.base_operator()
        hook: SparseLeft = type(base).sparse_left  # type: ignore[attr-defined]
        p = self.projection(m)
        sketch = np.asarray(p @ a.astype(np.float64), np.float32)
        factor_sketch = getattr(base, "factor_sketch", None)
        fan_in = m * self.column_nonzeros / self.sketch_dim  # rows of A summed by a sketch row, on average
        small = factor_sketch(sketch, fan_in=fan_in) if factor_sketch is not None else base.factor(sketch)
        split = getattr(base, "split_sparse_left", None)
        sketch_left, right = split(small) if split is not None else (small[hook.left], small[hook.right])
        left = recover_sparse(np.asarray(sketch_left, np.float64), p, nonnegative=hook.nonnegative,
                              nonzeros=self.recovery_nonzeros, l1=self.recovery_l1, max_iter=self.recovery_iter)
        right = np.asarray(right, np.float64)
        if self.refit:
            refit = getattr(base, "refit_right", None)
            right = refit(a, left, right) if refit is not None else np.linalg.lstsq(left, a, rcond=None)[0]
        join = getattr(base, "join_sparse_left", None)
        if join is not None:
            return join(a, left, right)
        full = {hook.left: left, hook.right: right}
        for k in base.specs(m, n):
            if k not in full and k not in base.generated:
                raise ValueError(f"compressed: {self.base} has a factor {k!r} that is neither its sparse left "
                                 f"{hook.left!r}, its right {hook.right!r} nor generated, and no "
                                 "`join_sparse_left`; it cannot be wrapped.")
        return {k: full[k] if k in full else base.generate(k, m, n) for k in base.specs(m, n)}

    # -- everything else is the wrapped operator's -----------------------------------------------------------
    def generate(self, name: str, m: int, n: int) -> np.ndarray:
        return self.base_operator().generate(name, m, n)

    def product(self, factors: Mapping[str, Any]) -> Any:
        return self.base_operator().product(factors)

    def matmul(self, x: Any, factors: Mapping[str, Any]) -> Any:
        return self.base_operator().matmul(x, factors)

    def gather(self, ids: Any, factors: Mapping[str, Any]) -> Any:
        return self.base_operator().gather(ids, factors)

    def packed_specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        return self.base_operator().packed_specs(m, n)

    def pack(self, factors: Factors) -> Factors:
        return self.base_operator().pack(factors)

    def unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        return self.base_operator().unpack(packed, m, n)

    def size_bits(self, factors: Factors) -> int:
        return self.base_operator().size_bits(factors)
