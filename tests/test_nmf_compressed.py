"""The ``nmf`` and ``compressed`` operators, the expander sketch and sparse recovery."""

import numpy as np
import pytest

import operators
import operators.compressed  # noqa: F401  (registers "compressed"; operators/__init__.py does not import it)
import operators.nmf  # noqa: F401  (registers "nmf")
from operators.compressed import supported
from operators.nmf import nmf
from operators.sketching import SparseLeft, expander, expander_matrix, expander_rows, recover_sparse
from tests.operator_conformance import LayerConformance, OperatorConformance

COMPRESSED = {"base": "nmf", "base_params": {"rank": 4, "max_iter": 60}, "sketch_dim": 16, "column_nonzeros": 3,
              "seed": 1}


def product(op, factors):
    return factors["left"] @ factors["right"]


def planted(m: int, n: int, r: int, nonzeros: int | None = None, seed: int = 0) -> tuple[np.ndarray, ...]:
    """W (m, r) >= 0 (``nonzeros`` per column when given, values in [0.5, 1.5]), H (r, n) >= 0, A = W H."""
    rng = np.random.default_rng(seed)
    if nonzeros is None:
        w = rng.uniform(0.0, 1.0, (m, r))
    else:
        w = np.zeros((m, r))
        for j in range(r):
            w[rng.choice(m, nonzeros, replace=False), j] = rng.uniform(0.5, 1.5, nonzeros)
    h = rng.uniform(0.0, 1.0, (r, n))
    return w, h, (w @ h).astype(np.float32)


def matched_correlation(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Best |Pearson correlation| of each true column with a found column (r,); the matching is one to one."""
    f, t = found - found.mean(0), true - true.mean(0)
    corr = np.abs(f.T @ t) / np.outer(np.linalg.norm(f, axis=0) + 1e-300, np.linalg.norm(t, axis=0))
    assert len(set(corr.argmax(axis=0))) == true.shape[1], "two true columns matched the same found column"
    return corr.max(axis=0)


class TestNMFConformance(OperatorConformance):
    name = "nmf"
    params = {"rank": 5, "max_iter": 50}
    reconstruct = staticmethod(product)


class TestNMFLayers(LayerConformance):
    name = "nmf"
    params = {"rank": 3, "max_iter": 50}


class TestCompressedConformance(OperatorConformance):
    name = "compressed"
    params = COMPRESSED
    reconstruct = staticmethod(product)


class TestCompressedLayers(LayerConformance):
    name = "compressed"
    params = COMPRESSED


# -- nmf ------------------------------------------------------------------------------------------------------
def test_nmf_recovers_a_planted_nonnegative_low_rank_matrix():
    _, _, a = planted(60, 40, 4)
    f = operators.get("nmf", rank=4, max_iter=3000, tol=0.0).factor(a)
    assert np.linalg.norm(a - f["left"] @ f["right"]) < 1e-3 * np.linalg.norm(a)


def test_nmf_factors_are_nonnegative_and_semi_nmf_handles_signed_matrices():
    _, _, a = planted(30, 20, 3)
    f = operators.get("nmf", rank=3).factor(a)
    assert f["left"].min() >= 0 and f["right"].min() >= 0
    signed = np.random.default_rng(0).standard_normal((30, 20)).astype(np.float32)
    g = operators.get("nmf", rank=20, max_iter=500).factor(signed)
    assert g["left"].min() >= 0 and g["right"].min() < 0  # semi-NMF: only the left factor is constrained
    assert np.linalg.norm(signed - g["left"] @ g["right"]) < 0.5 * np.linalg.norm(signed)


def test_nmf_l1_zeroes_entries_of_the_left_factor():
    _, _, a = planted(50, 30, 3, nonzeros=10)
    plain = operators.get("nmf", rank=3, max_iter=300).factor(a)["left"]
    sparse = operators.get("nmf", rank=3, max_iter=300, l1=0.5).factor(a)["left"]
    assert np.count_nonzero(sparse) < np.count_nonzero(plain)


def test_nmf_function_reports_iterations_and_stops_on_tol():
    a = np.random.default_rng(0).uniform(0.0, 1.0, (30, 20))
    *_, loose = nmf(a, 3, max_iter=1000, tol=1e-2)
    *_, tight = nmf(a, 3, max_iter=1000, tol=1e-8)
    assert 1 <= loose < tight <= 1000


@pytest.mark.parametrize("params, exc, match", [
    ({"rank": 0}, ValueError, r"`rank` must be >= 1, but got rank=0"),
    ({"rank": 25}, ValueError, r"`rank` must be in \[1, 24\] for a 40x24 matrix, but got rank=25"),
    ({"rank": 2.0}, TypeError, "rank=2.0"),
    ({"rank": 2, "max_iter": 0}, ValueError, "max_iter=0"),
    ({"rank": 2, "tol": -1.0}, ValueError, "tol=-1.0"),
    ({"rank": 2, "l1": float("nan")}, ValueError, "l1=nan"),
    ({"rank": 2, "l1": "big"}, TypeError, "l1='big'"),
    ({"rank": 2, "seed": -1}, ValueError, "seed=-1"),
])
def test_nmf_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        operators.get("nmf", **params).factor(np.ones((40, 24), np.float32))


# -- the expander sketch and sparse recovery ------------------------------------------------------------------
def test_expander_has_exactly_s_ones_per_column_and_is_reproducible_from_the_seed():
    p = expander(20, 300, 4, seed=7)
    assert p.shape == (20, 300) and set(np.unique(p)) == {0.0, 1.0}
    np.testing.assert_array_equal(p.sum(axis=0), 4)
    np.testing.assert_array_equal(p, expander(20, 300, 4, seed=7))
    assert not np.array_equal(p, expander(20, 300, 4, seed=8))
    np.testing.assert_array_equal(expander_matrix(expander_rows(20, 300, 4, 7), 20).toarray(), p)
    np.testing.assert_array_equal(expander(5, 10, 5, seed=0), np.ones((5, 10)))  # s = d: every row


def test_compressed_projection_is_the_seeded_expander():
    op = operators.get("compressed", **COMPRESSED)
    np.testing.assert_array_equal(op.projection(40).toarray(), expander(16, 40, 3, seed=1))


def test_nonnegative_recovery_is_exact_from_noiseless_sketches():
    w, _, _ = planted(300, 1, 6, nonzeros=8, seed=3)
    p = expander_matrix(expander_rows(60, 300, 4, 0), 60)
    for l1 in (0.0, 0.05):
        found = recover_sparse(p @ w, p, nonnegative=True, l1=l1, max_iter=3000, tol=1e-12)
        np.testing.assert_allclose(found, w, atol=1e-4)


def test_signed_recovery_by_omp():
    rng = np.random.default_rng(0)
    x = np.zeros((200, 3))
    for j in range(3):
        x[rng.choice(200, 4, replace=False), j] = rng.choice([-1.0, 1.0], 4) * rng.uniform(0.5, 1.5, 4)
    p = expander(60, 200, 8, seed=0)
    np.testing.assert_allclose(recover_sparse(p @ x, p, nonnegative=False, nonzeros=4), x, atol=1e-5)


def test_recover_sparse_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must be"):
        recover_sparse(np.ones((5, 2)), expander(6, 10, 2, 0), nonnegative=True)


# -- compressed --------------------------------------------------------------------------------------------
def test_compressed_recovers_a_planted_sparse_left_factor():
    w, _, a = planted(200, 200, 5, nonzeros=8, seed=1)
    op = operators.get("compressed", base="nmf", base_params={"rank": 5, "max_iter": 1000, "tol": 1e-9},
                       sketch_dim=80, column_nonzeros=4, seed=0)
    f = op.factor(a)
    assert matched_correlation(f["left"], w).min() > 0.99
    assert np.linalg.norm(a - f["left"] @ f["right"]) < 0.05 * np.linalg.norm(a)
    assert f["left"].min() >= 0 and f["right"].min() >= 0


def test_compressed_follows_the_base_operator():
    op = operators.get("compressed", **COMPRESSED)
    base = operators.get("nmf", **COMPRESSED["base_params"])
    assert op.pair is True and op.generated == () and op.specs(40, 24) == base.specs(40, 24)
    assert "nmf" in supported() and "low_rank" not in supported() and "compressed" not in supported()


def test_compressed_without_refit_keeps_the_right_factor_of_the_sketch(monkeypatch):
    _, _, a = planted(60, 30, 3, nonzeros=6)
    params = {**COMPRESSED, "base_params": {"rank": 3, "max_iter": 200}, "sketch_dim": 30}
    op = operators.get("compressed", **params, refit=False)
    sketch = np.asarray(op.projection(60) @ a.astype(np.float64), np.float32)
    alone = operators.get("nmf", **params["base_params"]).factor(sketch)
    np.testing.assert_array_equal(op.factor(a)["right"], alone["right"])
    refit = operators.get("compressed", **params).factor(a)
    assert refit["right"].min() >= 0  # nmf's own refit keeps a nonnegative A's right factor nonnegative
    monkeypatch.delattr(operators.nmf.NMF, "refit_right")  # a base without the method: least squares
    lstsq = operators.get("compressed", **params).factor(a)
    expected = np.linalg.lstsq(lstsq["left"].astype(np.float64), a.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(lstsq["right"], expected, rtol=1e-4, atol=1e-4)


def test_compressed_wraps_a_signed_base_through_the_split_and_join_hooks():
    rng = np.random.default_rng(4)
    atoms = rng.standard_normal((3, 30))

    @operators.register("test_known_atoms")
    class KnownAtoms(operators.Compressor):
        """Codes over fixed known atoms, stored transposed, so only the hook methods can find them."""

        sparse_left = SparseLeft(nonnegative=False)

        def specs(self, m, n):
            return {"atoms": operators.FactorSpec((3, n)), "codes_t": operators.FactorSpec((3, m))}

        def _factor(self, a):
            return {"atoms": atoms, "codes_t": np.linalg.lstsq(atoms.T, a.T.astype(np.float64), rcond=None)[0]}

        def product(self, factors):
            raise NotImplementedError

        def split_sparse_left(self, factors):
            return factors["codes_t"].T, factors["atoms"]

        def join_sparse_left(self, a, left, right):
            return {"atoms": right, "codes_t": left.T}

    w = np.zeros((120, 3))
    for j in range(3):
        w[rng.choice(120, 3, replace=False), j] = rng.choice([-1.0, 1.0], 3) * rng.uniform(0.5, 1.5, 3)
    assert "test_known_atoms" in supported()
    op = operators.get("compressed", base="test_known_atoms", sketch_dim=40, column_nonzeros=6, recovery_nonzeros=3)
    f = op.factor((w @ atoms).astype(np.float32))
    np.testing.assert_allclose(f["codes_t"].T, w, atol=1e-4)


@pytest.mark.parametrize("params, exc, match", [
    ({"base": "nope"}, ValueError, r"registered operator.*base='nope'"),
    ({"base": "low_rank", "base_params": {"rank": 2}}, ValueError,
     r"left factor is sparse.*one of \[.*'nmf'.*\], but got base='low_rank'"),
    ({"base_params": [1]}, TypeError, r"base_params=\[1\]"),
    ({"base_params": {"rank": 0}}, ValueError, "rank=0"),
    ({"base_params": {"rnak": 2}}, TypeError, "rnak"),
    ({"sketch_dim": 0}, ValueError, "sketch_dim=0"),
    ({"sketch_dim": 41}, ValueError, r"`sketch_dim` must be in \[1, 40\] for a 40x24 matrix, but got sketch_dim=41"),
    ({"sketch_dim": 8, "column_nonzeros": 9}, ValueError, r"`column_nonzeros` must be in \[1, 8\].*column_nonzeros=9"),
    ({"column_nonzeros": 0}, ValueError, "column_nonzeros=0"),
    ({"sketch_dim": 3}, ValueError, "sketch_dim` is too small.*3x24 sketch.*sketch_dim=3"),
    ({"seed": -2}, ValueError, "seed=-2"),
    ({"recovery_l1": 1.0}, ValueError, "recovery_l1=1.0"),
    ({"recovery_nonzeros": 0}, ValueError, "recovery_nonzeros=0"),
    ({"recovery_iter": 0}, ValueError, "recovery_iter=0"),
    ({"refit": "yes"}, TypeError, "refit=.yes."),
])
def test_compressed_bad_params(params, exc, match):
    with pytest.raises(exc, match=match):
        operators.get("compressed", **{**COMPRESSED, **params}).factor(np.ones((40, 24), np.float32))
