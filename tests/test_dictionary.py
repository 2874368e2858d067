"""Dictionary learning with batch OMP: the conformance suites plus OMP, recovery, validation and storage."""

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
    op = operators.get("dictionary", atoms=30, n_nonzero=3, max_iter=50)
    f = op.factor(a)
    approx = sparse_product(f["indices"].astype(int), f["values"], f["dictionary"])
    assert np.linalg.norm(a - approx) / np.linalg.norm(a) < 0.06  # noise floor 0.01; K-SVD reaches ~0.04
    match = np.abs(truth @ f["dictionary"].T).max(1)  # best |cosine| of each true atom with a learned one
    assert np.mean(match > 0.99) >= 0.9
    np.testing.assert_allclose(np.linalg.norm(f["dictionary"], axis=1), 1.0, atol=1e-5)


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
    layer = c.get_layer("emb")
    assert [layer.factors[k].trainable for k in ("indices", "values", "dictionary")] == [False, True, True]
    s = mutate.strip(c)
    assert isinstance(s.get_layer("emb"), mutate.SplicedEmbedding)
    np.testing.assert_allclose(s.predict(x, verbose=0), c.predict(x, verbose=0), atol=1e-5)
