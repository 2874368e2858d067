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


class TestKMeansConformance(OperatorConformance):
    name = "kmeans"
    params = {"k": 8}

    def reconstruct(self, op, factors):
        m = factors["codes"].shape[0]
        return factors["codebook"][factors["codes"].astype(int)].reshape(m, -1)


class TestBlockKMeansPrunedConformance(TestKMeansConformance):
    params = {"k": 6, "block_size": 4, "prune": True}


class TestRandomProjectionConformance(OperatorConformance):
    name = "random_projection"
    params = {"rank": 6}

    def reconstruct(self, op, factors):
        return factors["projection"] @ factors["right"]


class TestSimHashConformance(OperatorConformance):
    name = "simhash"
    params = {"rank": 32}

    def reconstruct(self, op, factors):
        return (factors["projection"].T @ factors["signs"]) * factors["scale"]


def test_kmeans_codes_use_the_smallest_integer_type_and_log2k_bits():
    a = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    op = operators.get("kmeans", k=16)
    f = op.factor(a)
    assert f["codes"].dtype == np.uint8 and f["codes"].max() < 16
    assert op.size_bits(f) == 16 * 32 + 64 * 32 * 4  # codebook floats + 4 bits per code
    assert operators.get("kmeans", k=300).specs(64, 32)["codes"].dtype == "uint16"
    # 5-bit codes straddle bytes and are still counted at 5 bits each
    assert operators.get("kmeans", k=32).size_bits(operators.get("kmeans", k=32).factor(a)) == 32 * 32 + 64 * 32 * 5


def test_kmeans_recovers_well_separated_clusters_and_prunes_to_exact_zero():
    rng = np.random.default_rng(1)
    centers = np.array([-3.0, -1.0, 0.05, 2.0, 5.0], np.float32)
    a = centers[rng.integers(0, 5, (40, 30))] + rng.normal(0, 0.01, (40, 30)).astype(np.float32)
    f = operators.get("kmeans", k=5).factor(a)
    np.testing.assert_allclose(np.sort(f["codebook"].ravel()), centers, atol=0.01)
    pruned = operators.get("kmeans", k=5, prune=True).factor(a)
    assert 0.0 in pruned["codebook"].ravel()
    zero = int(np.argmin(np.abs(pruned["codebook"].ravel())))
    assert np.all(np.abs(a[pruned["codes"] == zero]) < 0.1)


@pytest.mark.parametrize("init", ["kmeans++", "linear"])
def test_kmeans_iterates_lloyd_until_it_converges(init):
    """The stop test read inf - inertia <= tol * inf on the first pass: every k-means stopped after one Lloyd
    iteration, whatever max_iter (linear starts at twice the error they converge to)."""
    a = np.random.default_rng(0).standard_normal((128, 96)).astype(np.float32)

    def error(max_iter):
        op = operators.get("kmeans", k=16, init=init, max_iter=max_iter)
        return float(np.mean((np.asarray(op.product(op.factor(a))) - a) ** 2))

    assert error(30) < 0.97 * error(1)
    assert error(30) <= error(3) <= error(1)


def test_scalar_lloyd_on_sorted_values_matches_a_plain_lloyd():
    """`_iterate_sorted` (runs of the sorted values, prefix sums) against Lloyd written out: the same centroids,
    with ties, duplicate values, empty clusters re-seeded and values on a midpoint (to the lower centroid)."""
    from operators import kmeans as km

    def plain(x, c, max_iter, tol):
        previous = np.inf
        for _ in range(max_iter):
            idx, d = km._assign(x, c)  # every value against the midpoints, one pass
            counts = np.bincount(idx, minlength=len(c))
            empty = counts == 0
            sums = np.bincount(idx, weights=x[:, 0].astype(np.float64), minlength=len(c))
            c[~empty, 0] = (sums[~empty] / counts[~empty]).astype(x.dtype)
            if empty.any():
                c[empty] = x[np.argsort(-d)[: int(empty.sum())]]
            inertia = float(d.sum())
            if np.isfinite(previous) and previous - inertia <= tol * max(previous, 1e-12):
                break
            previous = inertia
        return c

    rng = np.random.default_rng(3)
    for case in range(12):
        x = rng.standard_normal((int(rng.integers(40, 600)), 1)).astype(np.float32)
        if case % 2:
            x = np.round(x * 2) / 2  # few distinct values: duplicates, ties, empty clusters
        k = int(rng.integers(2, 12))
        start = x[rng.choice(len(x), k, replace=False)].copy()
        got = km._iterate_sorted(x, start.copy(), 30, 1e-6, reseed=True)
        want = plain(x, start.copy(), 30, 1e-6)
        np.testing.assert_allclose(np.sort(got[:, 0]), np.sort(want[:, 0]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("params, shape, exc, match", [
    ({"k": 0}, None, ValueError, "k=0"),
    ({"k": 241}, (20, 12), ValueError, r"\[1, 240\].*k=241"),
    ({"k": 4, "block_size": 5}, (20, 12), ValueError, "block_size=5"),
    ({"k": 4, "prune": "yes"}, None, TypeError, "prune='yes'"),
])
def test_kmeans_bad_params(params, shape, exc, match):
    with pytest.raises(exc, match=match):
        op = operators.get("kmeans", **params)
        op.factor(np.ones(shape, np.float32))


def test_random_factors_are_regenerated_from_the_seed_and_cost_no_bits():
    a = np.random.default_rng(0).standard_normal((30, 20)).astype(np.float32)
    for name in ("random_projection", "simhash"):
        op = operators.get(name, rank=8, seed=3)
        f = op.factor(a)
        np.testing.assert_array_equal(op.generated_factors(30, 20)["projection"], f["projection"])
        assert "projection" not in op.pack(f)
        assert not np.array_equal(operators.get(name, rank=8, seed=4).factor(a)["projection"], f["projection"])
    rp = operators.get("random_projection", rank=8)
    assert rp.size_bits(rp.factor(a)) == 8 * 20 * 32
    sim = operators.get("simhash", rank=8)
    assert sim.size_bits(sim.factor(a)) == 8 * 20 + 20 * 32  # one bit per sign, one float per column


def test_simhash_keeps_column_norms():
    a = np.random.default_rng(0).standard_normal((30, 20)).astype(np.float32)
    f = operators.get("simhash", rank=64).factor(a)
    approx = (f["projection"].T @ f["signs"]) * f["scale"]
    np.testing.assert_allclose(np.linalg.norm(approx, axis=0), np.linalg.norm(a, axis=0), rtol=1e-5)
    cos = (approx * a).sum(0) / np.linalg.norm(approx, axis=0) / np.linalg.norm(a, axis=0)
    assert cos.mean() > 0.5


def test_operator_inputs_beyond_float32_and_equal_configs_hash_alike():
    """A finite float64 matrix beyond float32's range became Inf after the check (low_rank's SVD then looped
    forever, others returned Inf factors); a NaN reaching low-rank's host refresh was LAPACK's "SVD did not
    converge"; equal operators (sparsity=0 and 0.0) hashed differently."""
    a = np.ones((4, 4))
    a[0, 0] = 1e39
    for name, params in (("low_rank", {"rank": 2}), ("pruning", {"sparsity": 0.5}), ("kmeans", {"k": 2})):
        with pytest.raises(ValueError, match=r"beyond float32's range \(largest magnitude 1e\+39\)"):
            operators.get(name, **params).factor(a)
    with pytest.raises(ValueError, match="expected a real-valued matrix"):
        operators.get("pruning", sparsity=0.5).factor(np.ones((3, 3)) * (1 + 1j))
    op = operators.get("low_rank", rank=2)
    good = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    f = op.factor(good)
    bad = good.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="holds 1 NaN/Inf values"):
        op.refreshed(bad, f)
    with pytest.raises(ValueError, match=r"from a `right` factor of shape \(2, 5\)"):
        op.refreshed(good.T, f)
    with pytest.raises(ValueError, match=r"saliency has shape \(4, 3\), expected \(3, 4\)"):
        operators.get("gradient_pruning", sparsity=0.5).factor(np.ones((3, 4)), saliency=np.ones((4, 3)))
    p0, p1 = operators.get("pruning", sparsity=0), operators.get("pruning", sparsity=0.0)
    assert p0 == p1 and hash(p0) == hash(p1) and len({p0, p1}) == 1
    from mutate.search.genome import Mutation

    assert len({Mutation("d", "low_rank", {"rank": 8}), Mutation("d", "low_rank", {"rank": 8.0})}) == 1
