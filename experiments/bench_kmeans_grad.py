"""A spliced k-means kernel's codebook gradient on JAX (XLA CPU): four ways against the dense layer (a benchmark).

    .venv/bin/python experiments/bench_kmeans_grad.py             # LeNet's fc1, 784x300, k=16, batch 128
    .venv/bin/python experiments/bench_kmeans_grad.py --k 4 --rounds 25

A spliced k-means layer computes ``W = codebook[codes]`` and its codebook gradient sums ``dL/dW`` per code:
for LeNet's fc1 that is 235,200 lookups into 16 rows each step. `bench_spliced.py` measured the spliced k-means
LeNet at 1.2-1.6x of the dense step on JAX. This bench times ``grad(sum(tanh(x @ W) * r))`` for the dense
kernel (the anchor) and for the codebook, its gradient taken as:

- ``take``: JAX's own gradient of ``jnp.take`` (a scatter-add), what `operators._base.take_rows` runs on JAX;
- ``masked``: one masked sum per code (``where(codes == j, g, 0).sum()``);
- ``sorted``: ``segment_sum`` over the gradient permuted by the codes' sort (computed once, as the codes of a
  spliced layer are fixed), ``indices_are_sorted=True``;
- ``onehot``: a (k, m*n) one-hot mask times the gradient, summed.

Each variant's dense ``x^T g`` product is the same as the dense layer's kernel gradient, so the ratio above 1.0x
is what forming ``W`` and summing its gradient per code costs. Models alternate in rounds; each row is its
minimum (this VM drifts by tens of percent). Writes ``bench_kmeans_grad_k<k>.txt``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def variants(codes, k: int):
    """name -> W(codebook) for the four gradients (forward identical: a gather)."""
    import jax
    import jax.numpy as jnp

    m, n = codes.shape
    flat = codes.reshape(-1)
    order = jnp.argsort(flat)
    sorted_codes = flat[order]

    def gather(cb):
        return jnp.take(cb, codes, axis=0).reshape(m, n)

    def custom(backward):
        f = jax.custom_vjp(gather)
        f.defvjp(lambda cb: (gather(cb), None), lambda _, g: (backward(g.reshape(-1))[:, None],))
        return f

    return {
        "take": gather,
        "masked": custom(lambda g: jnp.stack([jnp.sum(jnp.where(flat == j, g, 0.0)) for j in range(k)])),
        "sorted": custom(lambda g: jax.ops.segment_sum(g[order], sorted_codes, num_segments=k,
                                                       indices_are_sorted=True)),
        "onehot": custom(lambda g: ((flat[None, :] == jnp.arange(k)[:, None]) * g[None, :]).sum(1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=784)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20, help="calls per timing")
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    m, n, k = args.m, args.n, args.k
    codes = jnp.asarray(rng.integers(0, k, (m, n)).astype(np.int32))
    codebook = jnp.asarray(rng.standard_normal((k, 1)).astype(np.float32))
    dense = jnp.asarray(rng.standard_normal((m, n)).astype(np.float32))
    x = jnp.asarray(rng.standard_normal((args.batch, m)).astype(np.float32))
    r = jnp.asarray(rng.standard_normal((args.batch, n)).astype(np.float32))

    def loss(w, x, r):
        return jnp.sum(jnp.tanh(x @ w) * r)

    fns = {"dense": (jax.jit(jax.grad(loss)), dense)}
    for name, w in variants(codes, k).items():
        fns[name] = (jax.jit(jax.grad(lambda cb, x, r, w=w: loss(w(cb), x, r))), codebook)
    reference = np.asarray(fns["take"][0](codebook, x, r))
    errors = {}
    for name, (f, p) in fns.items():
        got = np.asarray(f(p, x, r))
        if name != "dense":
            errors[name] = float(np.abs(got - reference).max() / np.abs(reference).max())
    best = {name: float("inf") for name in fns}
    for _ in range(args.rounds):
        for name, (f, p) in fns.items():
            t = time.perf_counter()
            for _ in range(args.calls):
                out = f(p, x, r)
            out.block_until_ready()
            best[name] = min(best[name], (time.perf_counter() - t) / args.calls)
    lines = [f"grad of sum(tanh(x @ W) * r), W {m}x{n}, batch {args.batch}, k={k} ({m * n:,} lookups); "
             f"jax {jax.__version__} on {jax.devices()[0].platform}; minimum of {args.rounds} rounds"]
    for name, t in best.items():
        err = "" if name == "dense" else f"  (codebook gradient vs take: max rel. diff {errors[name]:.1e})"
        lines.append(f"  {name:7s} {t * 1e3:7.3f} ms  {t / best['dense']:.2f}x of dense{err}")
    print("\n".join(lines))
    (HERE / f"bench_kmeans_grad_k{k}.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
