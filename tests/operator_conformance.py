"""A reusable conformance base: subclass it once per operator (see tests/test_operators.py).

Pure NumPy: it never imports Keras, so every operator's contract is checked in milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import operators
from operators import Compressor, array_bits, dtype_bits


class OperatorConformance:
    """Subclasses set ``name`` and ``params``; ``shapes`` lists the (m, n) matrices to try."""

    name: str = ""
    params: dict[str, Any] = {}
    shapes: tuple[tuple[int, int], ...] = ((40, 24), (24, 40), (64, 64))

    def make(self) -> Compressor:
        return operators.get(self.name, **self.params)

    @staticmethod
    def matrix(m: int, n: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((m, n)).astype(np.float32)

    def test_registered(self) -> None:
        assert self.name in operators.available()
        assert self.make().name == self.name

    def test_factor_shapes_and_dtypes_follow_specs(self) -> None:
        op = self.make()
        for m, n in self.shapes:
            factors = op.factor(self.matrix(m, n))
            specs = op.specs(m, n)
            assert list(factors) == list(specs)
            for key, spec in specs.items():
                assert factors[key].shape == spec.shape, key
                assert factors[key].dtype == np.dtype(spec.dtype), key

    def test_packed_arrays_follow_packed_specs_and_size_counts_them(self) -> None:
        op = self.make()
        for m, n in self.shapes:
            factors = op.factor(self.matrix(m, n))
            packed = op.pack(factors)
            specs = op.packed_specs(m, n)
            assert list(packed) == list(specs)
            for key, spec in specs.items():
                assert packed[key].shape == spec.shape and packed[key].dtype == np.dtype(spec.dtype), key
            assert op.size_bits(factors) == array_bits(packed)
            assert op.size_bits(factors) == sum(int(np.prod(s.shape)) * dtype_bits(s.dtype) for s in specs.values())

    def test_deterministic(self) -> None:
        a = self.matrix(40, 24, seed=3)
        f1, f2 = self.make().factor(a), self.make().factor(a.copy())
        for key in f1:
            np.testing.assert_array_equal(f1[key], f2[key])

    def test_config_round_trip(self) -> None:
        op = self.make()
        again = operators.get(self.name, **op.get_config())
        assert again == op

    def test_rejects_nan_and_non_matrix(self) -> None:
        op = self.make()
        a = self.matrix(10, 8)
        a[2, 3] = np.nan
        with pytest.raises(ValueError, match="NaN/Inf"):
            op.factor(a)
        with pytest.raises(ValueError, match="2-D"):
            op.factor(np.zeros((2, 3, 4), np.float32))

    def test_reconstruction_beats_zero(self) -> None:
        a = self.matrix(48, 32, seed=1)
        approx = self.reconstruct(self.make(), self.make().factor(a))
        assert approx.shape == a.shape
        assert np.linalg.norm(a - approx) < np.linalg.norm(a)

    def reconstruct(self, op: Compressor, factors: dict[str, np.ndarray]) -> np.ndarray:
        """NumPy reference of ``op.product``; subclasses define it for their operator."""
        raise NotImplementedError
