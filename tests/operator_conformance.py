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


class LayerConformance:
    """The Keras half of the contract, run over every operator through real layers (imports TensorFlow).

    Subclasses set ``name`` and ``params``; ``exact_params`` are parameters for which the method reconstructs
    A exactly (full rank, zero sparsity), or None when it never does.
    """

    name: str = ""
    params: dict[str, Any] = {}
    exact_params: dict[str, Any] | None = None

    def _spliced(self, params: dict[str, Any]):
        import keras

        import mutate
        from tests.helpers import compile_, data, fit, mlp, state

        x, y = data()
        c = compile_(mutate.compress(mlp((16, 24, 12, 5)), {"dense_1": (self.name, params)}, mutate.Schedule(0, 3, 1)))
        fit(c, x, y)
        layer = state(c, "dense_1")
        assert layer.current_alpha() == 0.0
        claimed = layer.compressor.size_bits(layer.factor_values())
        blended = c.predict(x, verbose=0)
        return x, blended, claimed, mutate.strip(c), keras

    def test_keras_product_matches_the_numpy_factors(self) -> None:
        import keras

        op = operators.get(self.name, **self.params)
        a = np.random.default_rng(0).standard_normal((24, 12)).astype(np.float32)
        factors = op.factor(a)
        tensors = {k: keras.ops.convert_to_tensor(v) for k, v in factors.items()}
        product = keras.ops.convert_to_numpy(op.product(tensors))
        x = np.random.default_rng(1).standard_normal((3, 24)).astype(np.float32)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(op.matmul(x, tensors)), x @ product, atol=1e-4)
        ids = np.array([[0, 5], [23, 7]], np.int32)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(op.gather(ids, tensors)), product[ids], atol=1e-5)
        m, n = a.shape
        packed = {k: keras.ops.convert_to_tensor(v) for k, v in op.pack(factors).items()}
        generated = {k: keras.ops.convert_to_tensor(v) for k, v in op.generated_factors(m, n).items()}
        unpacked = keras.ops.convert_to_numpy(op.product({**generated, **op.unpack(packed, m, n)}))
        np.testing.assert_allclose(unpacked, product, atol=1e-6)

    def test_size_bits_is_what_the_spliced_layer_stores(self) -> None:
        import mutate

        x, _, claimed, s, _ = self._spliced(self.params)
        bias_bits = 32 * 12
        entry = {e.name: e for e in mutate.model_size(s).layers}["dense_1"]
        # what a file stores: a spliced layer also holds the decoded codes of its packed integer arrays (for
        # speed, `KernelState._build_packed`), which are neither saved nor counted
        stored = [w for w in s.get_layer("dense_1").weights if "/decoded_" not in w.path]
        counted = sum(int(np.prod(w.shape)) * operators.dtype_bits(w.dtype) for w in stored)
        assert entry.bits == counted == claimed + bias_bits
        assert not [w.path for w in stored if w.dtype == "float32" and int(np.prod(w.shape)) >= 24 * 12], "A survived"

    def test_spliced_model_matches_and_round_trips_exactly(self, tmp_path) -> None:
        x, blended, _, s, keras = self._spliced(self.params)
        np.testing.assert_allclose(s.predict(x, verbose=0), blended, atol=1e-5)
        s.save(tmp_path / "s.keras")
        loaded = keras.saving.load_model(tmp_path / "s.keras")
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), s.predict(x, verbose=0))

    def test_exact_reconstruction_where_the_method_allows(self) -> None:
        if self.exact_params is None:
            pytest.skip(f"{self.name} never reconstructs exactly")
        op = operators.get(self.name, **self.exact_params)
        a = np.random.default_rng(2).standard_normal((20, 12)).astype(np.float32)
        import keras

        tensors = {k: keras.ops.convert_to_tensor(v) for k, v in op.factor(a).items()}
        np.testing.assert_allclose(keras.ops.convert_to_numpy(op.product(tensors)), a, atol=1e-4)

    @pytest.mark.parametrize("kind", ["conv2d", "einsum", "embedding", "lstm", "depthwise"])
    def test_every_layer_kind_blends_splices_and_round_trips(self, kind, tmp_path) -> None:
        """The operator on a kernel of each layer kind whose matrix view is 24 x 12 (the Dense case's shape)."""
        import keras

        import mutate
        from tests.helpers import state

        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        layer, shape = {
            "conv2d": (keras.layers.Conv2D(12, 2, name="k"), (4, 4, 6)),
            "einsum": (keras.layers.EinsumDense("abc,cde->abde", (3, 3, 4), name="k"), (3, 24)),
            "embedding": (keras.layers.Embedding(24, 12, name="k"), (5,)),
            "lstm": (keras.layers.LSTM(3, name="k"), (4, 24)),
            "depthwise": (keras.layers.DepthwiseConv2D((4, 6), name="k"), (5, 7, 12)),
        }[kind]
        inp = keras.Input(shape, dtype="int32" if kind == "embedding" else "float32")
        h = keras.layers.Flatten()(layer(inp))
        model = keras.Model(inp, keras.layers.Dense(3, name="head")(h))
        x = rng.integers(0, 24, (32, *shape)) if kind == "embedding" else rng.standard_normal((32, *shape))
        y = rng.integers(0, 3, 32)
        assert mutate.kernel(model, "k").matrix == (24, 12)
        c = mutate.compress(model, {"k": (self.name, self.params)}, mutate.Schedule(0, 3, 1))
        c.compile(keras.optimizers.SGD(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        c.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
        st = state(c, "k")
        assert st.current_alpha() == 0.0
        claimed = st.compressor.size_bits(st.factor_values())
        blended = c.predict(x, verbose=0)
        mutate.strip(c)
        np.testing.assert_allclose(c.predict(x, verbose=0), blended, atol=1e-4)
        assert sum(int(np.prod(w.shape)) * operators.dtype_bits(w.dtype) for w in state(c, "k").stored_weights) == claimed
        c.save(tmp_path / "s.keras")
        loaded = keras.saving.load_model(tmp_path / "s.keras")
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), c.predict(x, verbose=0))
