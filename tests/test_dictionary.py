"""Dictionary learning with batch OMP: the conformance suites plus OMP, recovery, validation and storage."""

import functools

import numpy as np
import pytest

import operators
import operators.dictionary  # noqa: F401  (registers "dictionary"; operators/__init__ does not import it)
from operators.dictionary import sparse_product
from operators.omp import batch_omp
from tests.operator_conformance import LayerConformance, OperatorConformance


class TestDictionaryConformance(OperatorConformance):
    name = "dictionary"
    params = {"atoms": 16, "n_nonzero": 3, "max_iter": 3}

    def reconstruct(self, op, factors):
        return sparse_product(factors["indices"].astype(int), factors["values"], factors["dictionary"])


class TestDictionaryLayers(LayerConformance):
    name = "dictionary"
    params = {"atoms": 8, "n_nonzero": 3, "max_iter": 3}
    exact_params = {"atoms": 12, "n_nonzero": 12, "max_iter": 2}


def naive_omp(x: np.ndarray, d: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Textbook OMP, one row at a time, with a least-squares solve after each greedy pick."""
    unit = d / np.linalg.norm(d, axis=1, keepdims=True)
    indices, values = [], []
    for row in x:
        chosen: list[int] = []
        residual = row
        for _ in range(s):
            score = np.abs(unit @ residual)
            score[chosen] = -1.0
            chosen.append(int(score.argmax()))
            coef, *_ = np.linalg.lstsq(d[chosen].T, row, rcond=None)
            residual = row - d[chosen].T @ coef
        indices.append(chosen)
        values.append(coef)
    return np.array(indices), np.array(values)


def planted(m: int, n: int, atoms: int, s: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows that are s-sparse combinations of random unit atoms, plus noise of relative norm ``noise``."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((atoms, n))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    idx = np.argsort(rng.random((m, atoms)), axis=1)[:, :s]
    clean = sparse_product(idx, rng.standard_normal((m, s)), d)
    a = clean + noise * np.linalg.norm(clean) / np.sqrt(m * n) * rng.standard_normal((m, n))
    return a.astype(np.float32), d


@pytest.mark.parametrize("s, batch_size", [(1, 1024), (4, 7), (10, 16)])
def test_batch_omp_matches_row_by_row_omp(s, batch_size):
    rng = np.random.default_rng(0)
    d = rng.standard_normal((30, 10)) * rng.uniform(0.5, 2.0, (30, 1))  # atoms of unequal norms
    x = rng.standard_normal((50, 10))
    indices, values = batch_omp(x, d, s, batch_size=batch_size)
    ref_indices, ref_values = naive_omp(x, d, s)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(values, ref_values, atol=1e-9)


def test_batch_omp_gives_zero_to_atoms_picked_after_an_exact_fit():
    d = np.eye(4)
    x = np.array([[3.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.0, 0.0]])
    indices, values = batch_omp(x, d, 3)
    np.testing.assert_allclose(sparse_product(indices, values, d), x, atol=1e-6)
    assert all(len(set(row)) == 3 for row in indices)
    assert np.count_nonzero(np.abs(values) > 1e-6) == 3


def test_batch_omp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="n_nonzero=5"):
        batch_omp(np.zeros((3, 2)), np.eye(2), 5)
    with pytest.raises(ValueError, match="must be"):
        batch_omp(np.zeros((3, 2)), np.eye(3), 1)


def test_recovers_a_planted_sparse_dictionary():
    a, truth = planted(1000, 20, 30, 3, noise=0.01)
    op = operators.get("dictionary", atoms=30, n_nonzero=3, max_iter=50, balance=False)
    f = op.factor(a)
    approx = sparse_product(f["indices"].astype(int), f["values"], f["dictionary"])
    assert np.linalg.norm(a - approx) / np.linalg.norm(a) < 0.06  # noise floor 0.01; K-SVD reaches ~0.04
    match = np.abs(truth @ f["dictionary"].T).max(1)  # best |cosine| of each true atom with a learned one
    assert np.mean(match > 0.99) >= 0.9
    np.testing.assert_allclose(np.linalg.norm(f["dictionary"], axis=1), 1.0, atol=1e-5)


def test_balance_equalises_atom_and_value_rms_and_keeps_the_product():
    """Wide atoms: unit rows hold elements ~1/sqrt(n) against values ~30; balanced, both sides match."""
    a, _ = planted(60, 400, 12, 2, noise=0.01, seed=3)
    a *= 30.0
    unit = operators.get("dictionary", atoms=12, n_nonzero=2, max_iter=5, balance=False).factor(a)
    bal = operators.get("dictionary", atoms=12, n_nonzero=2, max_iter=5).factor(a)
    np.testing.assert_array_equal(bal["indices"], unit["indices"])
    product = sparse_product(unit["indices"].astype(int), unit["values"], unit["dictionary"])
    np.testing.assert_allclose(sparse_product(bal["indices"].astype(int), bal["values"], bal["dictionary"]),
                               product, rtol=1e-4, atol=1e-3)
    idx, val, d = bal["indices"].astype(int), bal["values"], bal["dictionary"]
    rms_unit = np.sqrt(np.mean(unit["values"] ** 2)) / np.sqrt(np.mean(unit["dictionary"] ** 2))
    assert rms_unit > 100  # the imbalance the option removes
    for atom in np.unique(idx):
        g = val[idx == atom]
        np.testing.assert_allclose(np.sqrt(np.mean(g ** 2)), np.sqrt(np.mean(d[atom] ** 2)), rtol=1e-4)


def test_bad_balance_names_the_value():
    with pytest.raises(TypeError, match="balance='yes'"):
        operators.get("dictionary", balance="yes")


def test_more_iterations_do_not_hurt_and_beat_the_initial_atoms():
    a, _ = planted(300, 12, 16, 2, noise=0.05, seed=1)

    def error(max_iter):
        f = operators.get("dictionary", atoms=16, n_nonzero=2, max_iter=max_iter).factor(a)
        return np.linalg.norm(a - sparse_product(f["indices"].astype(int), f["values"], f["dictionary"]))

    assert error(10) < 0.5 * error(0)


def test_zero_matrix_factors_to_zero():
    f = operators.get("dictionary", atoms=4, n_nonzero=2, max_iter=2).factor(np.zeros((6, 5), np.float32))
    assert not np.any(f["values"])
    assert np.all(np.isfinite(f["dictionary"]))


@pytest.mark.parametrize("params, exc, text", [
    ({"atoms": 0}, ValueError, "atoms=0"),
    ({"atoms": 2.5}, TypeError, "atoms=2.5"),
    ({"atoms": 8, "n_nonzero": 0}, ValueError, "n_nonzero=0"),
    ({"atoms": 8, "n_nonzero": 9}, ValueError, r"\[1, atoms=8\], but got n_nonzero=9"),
    ({"max_iter": -1}, ValueError, "max_iter=-1"),
    ({"seed": -2}, ValueError, "seed=-2"),
    ({"sparsity": 0.5}, TypeError, "sparsity"),
])
def test_bad_params(params, exc, text):
    with pytest.raises(exc, match=text):
        operators.get("dictionary", **params)


def test_n_nonzero_above_the_columns_names_value_and_shape():
    with pytest.raises(ValueError, match=r"\[1, 6\] for a 10x6 matrix, but got n_nonzero=7"):
        operators.get("dictionary", atoms=32, n_nonzero=7).factor(np.ones((10, 6), np.float32))


@pytest.mark.parametrize("atoms, dtype, bits", [(16, "uint8", 4), (256, "uint8", 8), (300, "uint16", 9)])
def test_size_bits_counts_packed_indices_values_and_dictionary(atoms, dtype, bits):
    m, n, s = 37, 20, 3
    op = operators.get("dictionary", atoms=atoms, n_nonzero=s, max_iter=1)
    f = op.factor(np.random.default_rng(0).standard_normal((m, n)).astype(np.float32))
    assert f["indices"].dtype == np.dtype(dtype)
    assert op.size_bits(f) == 8 * -(-m * s * bits // 8) + 32 * m * s + 32 * atoms * n
    packed = op.pack(f)
    unpacked = np.unpackbits(packed["indices"], bitorder="little")[: m * s * bits].reshape(m * s, bits)
    np.testing.assert_array_equal(unpacked @ (1 << np.arange(bits)), f["indices"].ravel())


def test_embedding_trains_its_atoms_and_splices_to_gathers():
    import keras

    import mutate

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 6, name="emb"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(4, name="head")])
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 20, (32, 5)).astype(np.int32), rng.integers(0, 4, 32)
    c = mutate.compress(model, {"emb": ("dictionary", {"atoms": 5, "n_nonzero": 2, "max_iter": 2})},
                        mutate.Schedule(0, 2, 1))
    c.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    c.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
    layer = mutate.kernel(c, "emb").compression
    assert [layer.factors[k].trainable for k in ("indices", "values", "dictionary")] == [False, True, True]
    blended = c.predict(x, verbose=0)
    s = mutate.strip(c)
    assert mutate.kernel(s, "emb").state == "spliced" and type(s.get_layer("emb")).__name__ == "Embedding"
    np.testing.assert_allclose(s.predict(x, verbose=0), blended, atol=1e-5)


# -- dictionary wrapped by ``compressed`` (compressed factorization, operators/compressed.py) -----------------
COMPRESSED_DICTIONARY = {"base": "dictionary", "base_params": {"atoms": 16, "n_nonzero": 3, "max_iter": 3},
                         "sketch_dim": 16, "column_nonzeros": 3, "seed": 1}


class TestCompressedDictionaryConformance(OperatorConformance):
    name = "compressed"
    params = COMPRESSED_DICTIONARY

    def reconstruct(self, op, factors):
        return sparse_product(factors["indices"].astype(int), factors["values"], factors["dictionary"])


class TestCompressedDictionaryLayers(LayerConformance):
    name = "compressed"
    params = {**COMPRESSED_DICTIONARY, "base_params": {"atoms": 8, "n_nonzero": 3, "max_iter": 3}}
    exact_params = {**COMPRESSED_DICTIONARY, "base_params": {"atoms": 12, "n_nonzero": 12, "max_iter": 2}}


def test_compressed_dictionary_gives_the_dictionary_operators_factors():
    import operators.compressed  # noqa: F401  (registers "compressed")

    op = operators.get("compressed", base="dictionary", base_params={"atoms": 32, "n_nonzero": 3, "balance": False},
                       sketch_dim=50, column_nonzeros=4, seed=0)
    assert "dictionary" in operators.compressed.supported()
    assert op.specs(200, 20) == operators.get("dictionary", atoms=32, n_nonzero=3).specs(200, 20)
    a, _ = planted(200, 20, 32, 3, noise=0.01)
    f = op.factor(a)
    assert f["indices"].shape == f["values"].shape == (200, 3) and f["indices"].dtype == np.uint8
    assert all(len(set(row)) == 3 for row in f["indices"].astype(int))
    np.testing.assert_allclose(np.linalg.norm(f["dictionary"], axis=1), 1.0, atol=1e-5)
    # the codes are exactly an OMP re-encoding of A against the returned dictionary
    idx, val = batch_omp(a.astype(np.float64), f["dictionary"].astype(np.float64), 3)
    np.testing.assert_array_equal(f["indices"], idx)
    np.testing.assert_allclose(f["values"], val, rtol=1e-4, atol=1e-5)


def test_dictionary_sketch_sparsity_grows_with_the_fan_in():
    op = operators.get("dictionary", atoms=32, n_nonzero=3)
    assert [op.sketch_nonzero(20, f) for f in (0.5, 1.0, 2.5, 20.0)] == [3, 3, 9, 20]
    assert op.sketch_nonzero(64, 20.0) == 32


@functools.lru_cache(maxsize=1)
def _planted_relative_errors() -> dict[str, tuple[float, float]]:
    """(relative error, seconds) of plain and compressed (d=400) dictionary learning on the planted case."""
    import time

    import operators.compressed  # noqa: F401  (registers "compressed")

    a, _ = planted(2000, 32, 32, 3, noise=0.01)
    ops = {"plain": operators.get("dictionary", atoms=32, n_nonzero=3),
           "compressed": operators.get("compressed", base="dictionary", base_params={"atoms": 32, "n_nonzero": 3},
                                       sketch_dim=400, column_nonzeros=4, seed=0)}
    out = {}
    for key, op in ops.items():
        start = time.perf_counter()
        f = op.factor(a)
        seconds = time.perf_counter() - start
        approx = sparse_product(f["indices"].astype(int), f["values"], f["dictionary"])
        out[key] = (float(np.linalg.norm(a - approx) / np.linalg.norm(a)), seconds)
    return out


def test_compressed_dictionary_on_a_planted_case_is_valid_but_far_from_plain():
    # Measured: plain ~0.076 in ~0.1 s, compressed ~0.67 in ~1 s. Each of the 400 sketch rows sums ~20 rows of
    # A, so its codes use ~28 of the 32 atoms: the sketch does not identify the atoms, and re-encoding A
    # against the sketch's dictionary is only somewhat better than nothing.
    errors = _planted_relative_errors()
    assert errors["plain"][0] < 0.1
    assert errors["compressed"][0] < 0.8


@pytest.mark.xfail(strict=True, reason="compressed dictionary learning does not identify the atoms when a sketch "
                                       "row's codes are dense (here ~28 of 32 atoms); see the test above")
def test_compressed_dictionary_matches_plain_on_a_planted_case():
    errors = _planted_relative_errors()
    assert errors["compressed"][0] <= 1.5 * errors["plain"][0]
