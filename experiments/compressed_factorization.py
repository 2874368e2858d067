"""Compressed NMF on the synthetic check of Sharan, Tai, Bailis and Valiant (arXiv 1706.08146).

A = W H + noise with W (m x r) nonnegative and sparse (``nnz`` nonzeros per column, values U(0, 1)), H (r x n)
dense U(0, 1), Gaussian noise scaled to ``noise * ‖W H‖_F`` and A clipped at 0 so that NMF applies.
(a) ``nmf`` factors A directly; (b) ``compressed`` sketches P A (d x n, s ones per column of P), factors the
sketch with the same ``nmf`` and recovers W by nonnegative sparse recovery. Reported for each: wall time,
relative error ``‖A - Ŵ Ĥ‖_F / ‖A‖_F`` and W correlation (mean absolute Pearson correlation of recovered
and true columns, matched one to one by the Hungarian algorithm).

Two noise scenarios: ``clip`` scales the noise to 10% before clipping (clipping then lowers it and adds a
positive bias); ``clip10`` scales it so that the clipped noise ``A - W H`` is exactly 10% of ‖W H‖_F.

    .venv/bin/python experiments/compressed_factorization.py            # full run, writes .txt and .csv
    .venv/bin/python experiments/compressed_factorization.py --quick    # m = n = 500 smoke run, no files
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import operators  # noqa: E402
import operators.compressed  # noqa: E402,F401  (registers "compressed")
from operators.nmf import nmf  # noqa: E402
from operators.sketching import recover_sparse  # noqa: E402

FULL = dict(m=2000, n=2000, r=10, nnz=100, d=400, s=5)
QUICK = dict(m=500, n=500, r=5, nnz=25, d=100, s=5)
L1_SWEEP = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
TOL_SWEEP = (1e-4, 1e-5, 1e-6, 1e-7)


def planted(m: int, n: int, r: int, nnz: int, noise: float, calibrate: bool, seed: int) -> tuple[np.ndarray, ...]:
    """W (m, r) sparse >= 0, H (r, n) >= 0 and A = max(W H + N, 0) (m, n), all float64.

    Args:
        calibrate: scale N so that ``‖A - W H‖ = noise·‖W H‖`` after clipping (by bisection on the scale);
            otherwise ``‖N‖ = noise·‖W H‖`` before clipping.
    """
    rng = np.random.default_rng(seed)
    w = np.zeros((m, r))
    for j in range(r):
        w[rng.choice(m, nnz, replace=False), j] = rng.uniform(0.0, 1.0, nnz)
    h = rng.uniform(0.0, 1.0, (r, n))
    wh = w @ h
    z = rng.standard_normal((m, n))
    target = noise * np.linalg.norm(wh)
    scale = target / np.linalg.norm(z)
    if calibrate:
        low, high = scale, 4.0 * scale
        for _ in range(50):
            mid = 0.5 * (low + high)
            low, high = (mid, high) if np.linalg.norm(np.maximum(wh + mid * z, 0.0) - wh) < target else (low, mid)
        scale = 0.5 * (low + high)
    return w, h, np.maximum(wh + scale * z, 0.0)


def w_correlation(found: np.ndarray, true: np.ndarray) -> float:
    """Mean |Pearson correlation| of the columns of ``found`` and ``true`` (m, r), matched by the Hungarian method."""
    f, t = found - found.mean(0), true - true.mean(0)
    norms = np.outer(np.linalg.norm(f, axis=0), np.linalg.norm(t, axis=0))
    corr = np.abs(f.T @ t) / np.maximum(norms, 1e-300)
    rows, cols = linear_sum_assignment(-corr)
    return float(corr[rows, cols].mean())


def timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """``fn()`` run ``repeats`` times: its (deterministic) result and the median wall time in seconds."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def _scores(a: np.ndarray, w: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[float, float]:
    """(relative error of ``left @ right`` against A, W correlation of ``left``)."""
    left, right = np.asarray(left, np.float64), np.asarray(right, np.float64)
    return float(np.linalg.norm(a - left @ right) / np.linalg.norm(a)), w_correlation(left, w)


def _row(scenario: str, method: str, tol: float, l1: float | str, iterations: int | str, sec: float, err: float,
         corr: float, floor: float) -> dict[str, Any]:
    return dict(scenario=scenario, method=method, tol=tol, recovery_l1=l1, iterations=iterations,
                time_s=round(sec, 4), rel_error=round(err, 5), w_correlation=round(corr, 5),
                noise_floor=round(floor, 5))


def run(args: argparse.Namespace, emit: Callable[[str], None]) -> list[dict[str, Any]]:
    """Both scenarios: the three methods, a tolerance sweep and a recovery-penalty sweep; returns CSV rows."""
    size = QUICK if args.quick else FULL
    m, n, r, nnz, d, s = (size[k] for k in ("m", "n", "r", "nnz", "d", "s"))
    nmf_params = {"rank": r, "max_iter": args.max_iter, "tol": args.tol, "seed": args.seed}
    comp_params = dict(base="nmf", base_params=nmf_params, sketch_dim=d, column_nonzeros=s, seed=args.seed,
                       recovery_l1=args.recovery_l1)
    methods = {"nmf": operators.get("nmf", **nmf_params),
               "compressed": operators.get("compressed", **comp_params, refit=False),
               "compressed+refit": operators.get("compressed", **comp_params, refit=True)}
    emit(f"m={m} n={n} r={r} nonzeros/column of W={nnz} d={d} s={s} noise={args.noise} seed={args.seed} "
         f"BLAS threads={args.threads} timing=median of {args.repeats}")
    for name, op in methods.items():
        emit(f"  {name}: {op!r}")
    rows: list[dict[str, Any]] = []
    for scenario in ("clip", "clip10"):
        w, h, a = planted(m, n, r, nnz, args.noise, scenario == "clip10", args.seed)
        wh, a32 = w @ h, a.astype(np.float32)
        floor = float(np.linalg.norm(a - wh) / np.linalg.norm(a))
        emit(f"\n[{scenario}] clipped entries {np.mean(a == 0):.1%}; noise after clipping ‖A-WH‖/‖WH‖ = "
             f"{np.linalg.norm(a - wh) / np.linalg.norm(wh):.4f}; noise floor ‖A-WH‖/‖A‖ = {floor:.4f}")
        seconds = {}
        for name, op in methods.items():
            f, seconds[name] = timed(lambda op=op: op.factor(a32), args.repeats)
            err, corr = _scores(a, w, f["left"], f["right"])
            emit(f"  {name:<17} time {seconds[name]:7.3f} s   rel error {err:.4f}   W correlation {corr:.4f}")
            rows.append(_row(scenario, name, args.tol, "" if name == "nmf" else args.recovery_l1, "", seconds[name],
                             err, corr, floor))
        emit(f"  speed-up over nmf: compressed {seconds['nmf'] / seconds['compressed']:.2f}x, compressed+refit "
             f"{seconds['nmf'] / seconds['compressed+refit']:.2f}x")

        p = methods["compressed"].projection(m)
        sketch = np.asarray(p @ a32.astype(np.float64), np.float32)
        emit(f"  tolerance sweep (one run each; HALS iterations on A and on the {d}x{n} sketch P A; "
             "compressed = sketch NMF + recovery, no refit):")
        for tol in TOL_SWEEP:
            (wd, hd, it_d), t_d = timed(lambda tol=tol: nmf(a32, r, max_iter=args.max_iter, tol=tol,
                                                             seed=args.seed), 1)
            start = time.perf_counter()
            ws, hs, it_s = nmf(sketch, r, max_iter=args.max_iter, tol=tol, seed=args.seed)
            wr = recover_sparse(ws, p, nonnegative=True, l1=args.recovery_l1)
            t_c = time.perf_counter() - start
            (err_d, corr_d), (err_c, corr_c) = _scores(a, w, wd, hd), _scores(a, w, wr, hs)
            emit(f"    tol={tol:<6g} nmf {it_d:4d} it {t_d:6.3f} s err {err_d:.4f} corr {corr_d:.4f} | compressed "
                 f"{it_s:4d} it {t_c:6.3f} s err {err_c:.4f} corr {corr_c:.4f} | speed-up {t_d / t_c:.2f}x")
            rows.append(_row(scenario, "nmf (tol sweep)", tol, "", it_d, t_d, err_d, corr_d, floor))
            rows.append(_row(scenario, "compressed (tol sweep)", tol, args.recovery_l1, it_s, t_c, err_c, corr_c,
                             floor))

        ws, hs, _ = nmf(sketch, r, max_iter=args.max_iter, tol=args.tol, seed=args.seed)
        emit(f"  recovery_l1 sweep at tol={args.tol:g} (no refit; sketch W̃ vs P W correlation "
             f"{w_correlation(ws, p @ w):.4f}):")
        for l1 in L1_SWEEP:
            left, sec = timed(lambda l1=l1: recover_sparse(ws, p, nonnegative=True, l1=l1), 1)
            err, corr = _scores(a, w, left, hs)
            emit(f"    recovery_l1={l1:<5} recovery {sec:6.3f} s   rel error {err:.4f}   W correlation {corr:.4f}   "
                 f"nonzeros/column {np.mean(np.sum(left > 0, 0)):.0f}")
            rows.append(_row(scenario, "compressed (l1 sweep)", args.tol, l1, "", sec, err, corr, floor))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="m = n = 500, r = 5, d = 100 smoke run; no files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.1)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--recovery-l1", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (median); 3, or 1 with --quick")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (1: steadier timings on shared cores)")
    parser.add_argument("--out", default=None, help="output prefix (default experiments/compressed_factorization; "
                                                    "none with --quick)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    out = args.out or (None if args.quick else str(ROOT / "experiments" / "compressed_factorization"))
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    emit("$ .venv/bin/python experiments/compressed_factorization.py " + " ".join(sys.argv[1:] if argv is None
                                                                                 else argv))
    with threadpool_limits(limits=args.threads):
        rows = run(args, emit)
    if out:
        Path(out + ".txt").write_text("\n".join(lines) + "\n")
        with open(out + ".csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {out}.txt and {out}.csv")


if __name__ == "__main__":
    main()
