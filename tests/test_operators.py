import numpy as np
import pytest

import operators
from operators.low_rank import randomized_svd
from tests.operator_conformance import OperatorConformance


class TestLowRankConformance(OperatorConformance):
    name = "low_rank"
    params = {"rank": 5}

    def reconstruct(self, op, factors):
        return factors["left"] @ factors["right"]


class TestLowRankRatioConformance(TestLowRankConformance):
    params = {"ratio": 4.0}


class TestPruningConformance(OperatorConformance):
    name = "pruning"
    params = {"sparsity": 0.9}

    def reconstruct(self, op, factors):
        return factors["values"] * factors["mask"]


def test_low_rank_is_the_best_rank_k_approximation():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((30, 6)) @ rng.standard_normal((6, 20))).astype(np.float32)
    f = operators.get("low_rank", rank=6).factor(a)
    np.testing.assert_allclose(f["left"] @ f["right"], a, atol=1e-4)
    b = rng.standard_normal((30, 20))
    f = operators.get("low_rank", rank=3).factor(b)
    s = np.linalg.svd(b, compute_uv=False)
    assert np.linalg.norm(b - f["left"] @ f["right"]) == pytest.approx(np.sqrt((s[3:] ** 2).sum()), rel=1e-4)


def test_randomized_svd_matches_exact_on_decaying_spectrum():
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    v, _ = np.linalg.qr(rng.standard_normal((200, 200)))
    s = 0.7 ** np.arange(200)
    a = (u[:, :200] * s) @ v.T
    _, s_r, _ = randomized_svd(a, 10, seed=0)
    np.testing.assert_allclose(s_r, s[:10], rtol=1e-6)
    exact = operators.get("low_rank", rank=10, method="exact").factor(a)
    rand = operators.get("low_rank", rank=10, method="randomized").factor(a)
    np.testing.assert_allclose(rand["left"] @ rand["right"], exact["left"] @ exact["right"], atol=1e-5)


def test_low_rank_ratio_picks_the_largest_rank_reaching_it():
    op = operators.get("low_rank", ratio=8.0)
    k = op.rank_for(256, 256)
    assert 256 * 256 / (k * 512) >= 8 > 256 * 256 / ((k + 1) * 512)


def test_pruning_keeps_exactly_the_largest_magnitudes():
    a = np.arange(1, 101, dtype=np.float32).reshape(10, 10) * np.where(np.arange(100) % 2, 1, -1).reshape(10, 10)
    f = operators.get("pruning", sparsity=0.9).factor(a)
    assert f["mask"].sum() == 10
    assert set(np.abs(a[f["mask"] > 0])) == set(range(91, 101))
    packed = operators.get("pruning", sparsity=0.9).pack(f)
    bits = np.unpackbits(packed["bitmask"], bitorder="little")[:100].reshape(10, 10)
    np.testing.assert_array_equal(bits, f["mask"])
    np.testing.assert_array_equal(packed["values"], a[f["mask"] > 0])
    # 100 mask bits rounded to 13 bytes, plus 10 float32 values
    assert operators.get("pruning", sparsity=0.9).size_bits(f) == 13 * 8 + 10 * 32


@pytest.mark.parametrize("params, exc, text", [
    ({"rank": 0}, ValueError, "rank=0"),
    ({"rank": -3}, ValueError, "rank=-3"),
    ({"rank": 2.5}, TypeError, "rank=2.5"),
    ({}, ValueError, "exactly one of"),
    ({"rank": 4, "ratio": 2.0}, ValueError, "exactly one of"),
    ({"ratio": 0.5}, ValueError, "ratio=0.5"),
    ({"rank": 4, "method": "qr"}, ValueError, "method='qr'"),
    ({"rank": 4, "bogus": 1}, TypeError, "bogus"),
])
def test_low_rank_bad_params(params, exc, text):
    with pytest.raises(exc, match=text):
        operators.get("low_rank", **params)


def test_rank_above_min_dimension_names_value_and_shape():
    with pytest.raises(ValueError, match=r"\[1, 8\] for a 10x8 matrix, but got rank=9"):
        operators.get("low_rank", rank=9).factor(np.ones((10, 8), np.float32))


@pytest.mark.parametrize("sparsity", [1.0, 1.5, -0.1, float("nan")])
def test_pruning_bad_sparsity(sparsity):
    with pytest.raises(ValueError, match="sparsity"):
        operators.get("pruning", sparsity=sparsity)


def test_unknown_operator_lists_available():
    with pytest.raises(ValueError, match="unknown operator 'svd'; available: .*low_rank.*pruning"):
        operators.get("svd")


def test_register_custom_operator_and_reject_clash():
    @operators.register("test_scaled_identity")
    class Scaled(operators.Compressor):
        def __init__(self, scale: float = 1.0) -> None:
            self.scale = scale

        def specs(self, m, n):
            return {"diag": operators.FactorSpec((min(m, n),))}

        def _factor(self, a):
            return {"diag": np.diag(a)[: min(a.shape)] * self.scale}

        def product(self, factors):
            raise NotImplementedError

    assert "test_scaled_identity" in operators.available()
    op = operators.get("test_scaled_identity", scale=2.0)
    np.testing.assert_array_equal(op.factor(np.eye(3, dtype=np.float32))["diag"], [2, 2, 2])
    with pytest.raises(ValueError, match="already registered"):
        operators.register("low_rank")(Scaled)
    with pytest.raises(TypeError, match="Compressor subclass"):
        operators.register("x")(object)
