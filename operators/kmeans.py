"""k-means quantization: A (m x n) ≈ codebook[codes], scalar (block 1) or vector (blocks of `block_size`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from operators._base import Compressor, FactorSpec, Factors, check_int, take_rows
from operators._bits import code_bits, pack_codes, packed_bytes, unpack_codes
from operators._registry import register


def code_dtype(k: int) -> str:
    """The smallest unsigned integer dtype that holds codes 0..k-1."""
    return "uint8" if k <= 256 else "uint16" if k <= 65536 else "int32"


def _assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row of ``x`` (N x b) and its squared distance."""
    if x.shape[1] == 1:  # scalar: binary search between sorted centroids, exact and O(N log k)
        order = np.argsort(centroids[:, 0], kind="stable")
        c = centroids[order, 0]
        pos = np.searchsorted((c[1:] + c[:-1]) / 2, x[:, 0], side="left")
        idx = order[pos]
        return idx, (x[:, 0] - centroids[idx, 0]) ** 2
    x64, c64 = x.astype(np.float64), centroids.astype(np.float64)
    d = (x64 * x64).sum(1)[:, None] - 2.0 * x64 @ c64.T + (c64 * c64).sum(1)[None, :]
    idx = d.argmin(1)
    return idx, np.maximum(d[np.arange(len(x)), idx], 0.0)


def linear_start(x: np.ndarray, k: int) -> np.ndarray:
    """``k`` centroids evenly spaced between the smallest and largest value of ``x`` (N x 1): Deep Compression's
    linear initialisation, which keeps centroids among the rare large weights."""
    return np.linspace(x.min(), x.max(), k, dtype=np.float64)[:, None].astype(x.dtype)


def lloyd(x: np.ndarray, k: int, *, max_iter: int, seed: int, tol: float = 1e-6,
          start: np.ndarray | None = None) -> np.ndarray:
    """k-means by Lloyd iterations from ``start`` (k x b) or a k-means++ start on a subsample; returns
    centroids (k x b). From a k-means++ start an empty cluster is re-seeded at the worst-served point; from a
    given start it keeps its centroid (a linear start's empty tails stay where they are)."""
    if start is not None:
        return _iterate(x, start.astype(x.dtype, copy=True), max_iter, tol, reseed=False)
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= 20 * k + 1000 else x[rng.choice(len(x), 20 * k + 1000, replace=False)]
    centroids = np.empty((k, x.shape[1]), x.dtype)
    centroids[0] = sample[rng.integers(len(sample))]
    dist = ((sample - centroids[0]) ** 2).sum(1)
    for j in range(1, k):
        total = dist.sum()
        pick = rng.choice(len(sample), p=dist / total) if total > 0 else rng.integers(len(sample))
        centroids[j] = sample[pick]
        dist = np.minimum(dist, ((sample - centroids[j]) ** 2).sum(1))
    return _iterate(x, centroids, max_iter, tol, reseed=True)


def _iterate(x: np.ndarray, centroids: np.ndarray, max_iter: int, tol: float, reseed: bool) -> np.ndarray:
    """Lloyd iterations until the inertia improves by at most ``tol`` (relative) or ``max_iter``. Scalar
    (one column): on the sorted values each cluster is a contiguous run, so an iteration is a binary search of
    the k-1 midpoints and prefix sums (`_iterate_sorted`), not a pass over every weight."""
    if x.shape[1] == 1:
        return _iterate_sorted(x, centroids, max_iter, tol, reseed)
    k = len(centroids)
    previous = np.inf
    for _ in range(max_iter):
        idx, d = _assign(x, centroids)
        counts = np.bincount(idx, minlength=k)
        sums = np.stack([np.bincount(idx, weights=x[:, j], minlength=k) for j in range(x.shape[1])], 1)
        empty = counts == 0
        centroids[~empty] = (sums[~empty] / counts[~empty, None]).astype(x.dtype)
        if reseed and empty.any():  # re-seed empty clusters at the worst-served points
            centroids[empty] = x[np.argsort(-d)[: int(empty.sum())]]
        inertia = float(d.sum())
        if _converged(previous, inertia, tol):
            break
        previous = inertia
    return centroids


def _converged(previous: float, inertia: float, tol: float) -> bool:
    """Whether an iteration gained at most ``tol`` of the inertia (never after the first: ``previous`` is
    inf then, and ``inf - x <= tol * inf`` would stop every run after one iteration)."""
    return bool(np.isfinite(previous)) and previous - inertia <= tol * max(previous, 1e-12)


def _iterate_sorted(x: np.ndarray, centroids: np.ndarray, max_iter: int, tol: float, reseed: bool) -> np.ndarray:
    """`_iterate` for scalars: the same assignment rule as `_assign` (a value on a midpoint goes to the lower
    centroid), the same means and inertia, from prefix sums over the sorted values."""
    v = np.sort(x[:, 0].astype(np.float64))
    s1 = np.concatenate([[0.0], np.cumsum(v)])
    s2 = np.concatenate([[0.0], np.cumsum(v * v)])
    previous = np.inf
    for _ in range(max_iter):
        order = np.argsort(centroids[:, 0], kind="stable")
        held = centroids[order, 0]  # midpoints in the centroids' dtype, as `_assign` computes them
        c = held.astype(np.float64)
        ends = np.concatenate([np.searchsorted(v, ((held[1:] + held[:-1]) / 2).astype(np.float64), side="right"),
                               [len(v)]])
        begins = np.concatenate([[0], ends[:-1]])
        counts = ends - begins
        sums = s1[ends] - s1[begins]
        inertia = float(np.maximum((s2[ends] - s2[begins]) - 2 * c * sums + counts * c * c, 0.0).sum())
        empty = counts == 0
        means = c.copy()
        means[~empty] = sums[~empty] / counts[~empty]
        centroids[order, 0] = means.astype(x.dtype)
        if reseed and empty.any():  # re-seed empty clusters at the worst-served points
            _, d = _assign(x, c[:, None].astype(x.dtype))
            centroids[order[empty], 0] = x[np.argsort(-d)[: int(empty.sum())], 0]
        if _converged(previous, inertia, tol):
            break
        previous = inertia
    return centroids


@register("kmeans")
class KMeans(Compressor):
    """Quantizes A to ``k`` centroids: scalar when ``block_size`` is 1, else row blocks of ``block_size``.

    Blending factors: ``codebook`` (k x block_size, trainable) and ``codes`` (m x n/block_size, the smallest
    unsigned integer type that holds k). A spliced layer stores the codebook and the codes bit-packed at
    ceil(log2 k) bits each: ``32*k*block_size + 8*ceil(m*n/block_size*ceil(log2 k)/8)`` bits.

    Args:
        k: number of centroids, in [1, m*n/block_size].
        block_size: consecutive weights of a row quantized together; must divide n.
        prune: set the centroid nearest zero to exactly zero (graph_compression's "k-means + pruning").
        max_iter: Lloyd iterations at most.
        seed: seed of the k-means++ start.
        init: ``"kmeans++"`` (centroids follow the weights' density: low distortion, near-uniform code use) or
            ``"linear"`` (scalar only: evenly spaced from min to max, then Lloyd; Deep Compression's choice:
            it keeps the rare large weights, and the codes' skewed use is what Huffman coding then shrinks.
            On LeNet-300-100's pruned fc1, k=64: 4.0 bits of code entropy at 7.1e-6 MSE against k-means++'s
            5.4 bits at 2.2e-6, and k-means++ at k=32 needs 4.4 bits for 7.8e-6).
    """

    refreshable = False  # see Compressor.refreshable: clustered once, then the codebook trains

    def __init__(self, k: int = 16, *, block_size: int = 1, prune: bool = False, max_iter: int = 30,
                 seed: int = 0, init: str = "kmeans++") -> None:
        self.k = k
        self.block_size = block_size
        self.prune = prune
        self.max_iter = max_iter
        self.seed = seed
        self.init = init

    def check(self, m: int | None = None, n: int | None = None) -> None:
        check_int("k", self.k, 1)
        check_int("block_size", self.block_size, 1)
        check_int("max_iter", self.max_iter, 1)
        check_int("seed", self.seed, 0)
        if not isinstance(self.prune, bool):
            raise TypeError(f"`prune` must be a bool, but got prune={self.prune!r}.")
        if self.init not in ("kmeans++", "linear"):
            raise ValueError(f"`init` must be 'kmeans++' or 'linear', but got init={self.init!r}.")
        if self.init == "linear" and self.block_size != 1:
            raise ValueError(f"`init='linear'` spaces scalar centroids; it needs block_size=1, but got "
                             f"block_size={self.block_size}.")
        if m is not None and n is not None:
            if n % self.block_size:
                raise ValueError(f"`block_size` must divide the {n} columns of a {m}x{n} matrix, but got "
                                 f"block_size={self.block_size}.")
            check_int("k", self.k, 1, m * n // self.block_size, shape=f"{m}x{n} (block {self.block_size})")

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        return {"codebook": FactorSpec((self.k, self.block_size)),
                "codes": FactorSpec((m, n // self.block_size), code_dtype(self.k), trainable=False)}

    def _factor(self, a: np.ndarray) -> Factors:
        m, n = a.shape
        x = a.reshape(-1, self.block_size)
        distinct = np.unique(x, axis=0)
        if len(distinct) <= self.k:  # every distinct block gets its own centroid: exact
            centroids = np.concatenate([distinct, np.repeat(distinct[:1], self.k - len(distinct), 0)])
        else:
            start = linear_start(x, self.k) if self.init == "linear" else None
            centroids = lloyd(x, self.k, max_iter=self.max_iter, seed=self.seed, start=start)
        if self.prune:
            centroids[np.argmin((centroids * centroids).sum(1))] = 0.0
        # A stable order (by first coordinate, then the rest): with `refresh`, code j keeps meaning "the j-th
        # smallest centroid" from one factorization to the next, so an optimizer's per-centroid state stays
        # attached to a similar value instead of jumping between clusters.
        centroids = centroids[np.lexsort(centroids.T[::-1])]
        codes, _ = _assign(x, centroids)
        return {"codebook": centroids, "codes": codes.reshape(m, n // self.block_size)}

    def product(self, factors: Mapping[str, Any]) -> Any:
        from keras import ops

        codes = ops.cast(factors["codes"], "int32")
        w = take_rows(factors["codebook"], codes)  # (m, n/b, b)
        return ops.reshape(w, (ops.shape(codes)[0], -1))

    def packed_specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        count = m * n // self.block_size
        return {"codebook": FactorSpec((self.k, self.block_size)),
                "codes": FactorSpec((packed_bytes(count, code_bits(self.k)),), "uint8", trainable=False)}

    def pack(self, factors: Factors) -> Factors:
        return {"codebook": factors["codebook"], "codes": pack_codes(factors["codes"], code_bits(self.k))}

    def unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        from keras import ops

        count = m * n // self.block_size
        codes = unpack_codes(packed["codes"], count, code_bits(self.k))
        return {"codebook": packed["codebook"], "codes": ops.reshape(codes, (m, n // self.block_size))}

    def streams(self, factors: Factors) -> dict[str, tuple[np.ndarray, int]]:
        return {"codes": (np.asarray(factors["codes"]).ravel(), self.k)}
