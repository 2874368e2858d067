"""Word-level LSTM language model on Shakespeare: low-rank vs dictionary learning vs k-means, one matrix at a time.

    .venv/bin/python experiments/lm_comparison.py                # full run, 1 seed, ~35 min on 2 shared cores
    .venv/bin/python experiments/lm_comparison.py --quick        # smoke run, tiny step counts, ~3-4 min
    .venv/bin/python experiments/lm_comparison.py --seeds 3      # three seeds (three times as long)
    .venv/bin/python experiments/lm_comparison.py --no-balance --only lstm softmax   # dictionary, unit-norm atoms

Google's graph_compression paper reported that on PTB dictionary learning is slightly better than low-rank.
This study repeats the comparison on the Shakespeare corpus (``mutate.data.shakespeare``: 10k vocabulary,
PTB-sized) with a small ``lstm_lm`` (embedding 128, LSTM 128 units, softmax 128 -> 10000).

Protocol, per seed: one dense model trains ``dense_steps``. From those same dense weights, each row
compresses ONE matrix (the embedding table, the LSTM input kernel, or the softmax kernel) with one method at
one of two levels (about 8x and 16x for the matrix itself), blends alpha 1 -> 0 over ``blend_steps``
(factors computed once from A at the first step, then trained with A; ``refresh=False``), splices it with
`mutate.strip`, and fine-tunes ``tune_steps``. The dense anchor trains the same ``blend_steps +
tune_steps`` without compression. Every phase after the prefix starts a fresh Adam at ``tune_lr`` (the
anchor too, at the same two points), and every row sees the same batches in the same order. The metric is
test perplexity, exp(mean token cross-entropy), on the first ``test_tokens`` tokens of the held-out plays.

Writes ``lm_comparison.csv`` (``lm_comparison_quick.csv`` with --quick) and ``lm_comparison.png``
(``lm_comparison_quick.png``) next to this script, and ends with a plain statement of the ordering.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MATRICES = ("embedding", "lstm", "softmax")
METHODS = ("low_rank", "dictionary", "kmeans")
MODEL = {"embedding": 128, "units": 128}
"""Sizes for `mutate.search.builders.lstm_lm`: smaller than the search space's 200 to fit the time budget."""

LEVELS: dict[str, dict[str, tuple[dict[str, int], dict[str, int]]]] = {
    # embedding table 10000 x 128 (rows are words)
    "embedding": {"low_rank": ({"rank": 16}, {"rank": 8}),                      # 7.90x, 15.8x
                  "dictionary": ({"atoms": 256, "n_nonzero": 10}, {"atoms": 128, "n_nonzero": 5}),  # 8.11x, 16.6x
                  "kmeans": ({"k": 16}, {"k": 4})},                             # 8.00x, 16.0x
    # LSTM input kernel 128 x 512 (the recurrent kernel and the bias stay dense)
    "lstm": {"low_rank": ({"rank": 13}, {"rank": 6}),                           # 7.88x, 17.1x
             "dictionary": ({"atoms": 15, "n_nonzero": 4}, {"atoms": 7, "n_nonzero": 3}),  # 7.94x, 16.4x
             "kmeans": ({"k": 16}, {"k": 4})},                                  # 7.98x, 16.0x
    # softmax kernel 128 x 10000 (rows are hidden units: each atom is a 10000-wide row, hence few atoms)
    "softmax": {"low_rank": ({"rank": 16}, {"rank": 8}),                        # 7.90x, 15.8x
                "dictionary": ({"atoms": 16, "n_nonzero": 4}, {"atoms": 8, "n_nonzero": 3}),  # 7.97x, 15.9x
                "kmeans": ({"k": 16}, {"k": 4})},                               # 8.00x, 16.0x
}
"""Operator parameters per matrix and method at level 1 (~8x) and level 2 (~16x) for the matrix itself."""


@dataclass(frozen=True)
class Budget:
    """Step counts, batch shape, learning rates and test subset of one mode."""

    dense_steps: int
    blend_steps: int
    tune_steps: int
    batch: int = 32
    seq_len: int = 35
    lr: float = 2e-3
    tune_lr: float = 1e-3
    updates: int = 10
    test_tokens: int = 40_000


# Measured on the 2 shared cores (other studies running): a 32x35 step of this model took 0.25-0.45 s (the
# 10k softmax is most of it; 0.14 s with a 2k vocabulary), a 30k-token test pass 5-10 s, each row's two
# traces and factoring 10-20 s. 1000 + 19 rows x 180 steps took 35.5 min for one seed (2127 s).
FULL = Budget(dense_steps=1000, blend_steps=100, tune_steps=80, test_tokens=30_000)
QUICK = Budget(dense_steps=20, blend_steps=4, tune_steps=2, updates=2, test_tokens=2_000)


def configure_threads(threads: int) -> None:
    """Pin TensorFlow to ``threads`` intra-op threads and one inter-op thread (before any op runs).

    On a loaded 2-core machine TensorFlow's default pools spin and lose the cores to other jobs; measured
    here, a step of this model took 0.7 s wall with the defaults and 0.2-0.3 s with 1-2 threads.
    """
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def build(data: Any, seed: int) -> Any:
    """A fresh `lstm_lm` of `MODEL` sizes for ``data``, its initial weights drawn from ``seed``."""
    import keras

    from mutate.search.builders import lstm_lm

    keras.utils.set_random_seed(seed)
    return lstm_lm(data, **MODEL)


def compiled(model: Any, lr: float) -> Any:
    """``model`` compiled with a fresh Adam at ``lr`` and token-mean cross-entropy from logits."""
    import keras

    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def batches(data: Any, steps: int, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``steps * batch`` training windows in a seeded shuffled order (epochs concatenated as needed)."""
    rng = np.random.default_rng(seed)
    need = steps * batch
    order = np.concatenate([rng.permutation(len(data.x_train)) for _ in range(-(-need // len(data.x_train)))])
    return data.x_train[order[:need]], data.y_train[order[:need]]


def train(model: Any, xy: tuple[np.ndarray, np.ndarray], batch: int, callbacks: list[Any] | None = None) -> None:
    """One pass over ``xy`` in order, ``len(x) / batch`` steps."""
    model.fit(*xy, batch_size=batch, epochs=1, shuffle=False, verbose=0, callbacks=callbacks or [])


def perplexity(model: Any, test: tuple[np.ndarray, np.ndarray]) -> float:
    """exp(mean token cross-entropy) of ``model`` on ``test`` (Keras weights batches by size: a token mean)."""
    return math.exp(model.evaluate(*test, batch_size=256, verbose=0, return_dict=True)["loss"])


def ratios(model: Any, name: str, shape: tuple[int, int]) -> tuple[float, float]:
    """(matrix ratio, whole-model ratio) of ``model``: dense bits over stored bits.

    The matrix ratio counts only the compressed matrix: 32*m*n over the layer's stored bits less the weights
    it keeps dense (a bias; an LSTM's recurrent kernel and bias).
    """
    import mutate

    size = mutate.model_size(model)
    layer = next(s for s in size.layers if s.name == name)
    kept = layer.dense_bits - 32 * shape[0] * shape[1]
    return 32 * shape[0] * shape[1] / (layer.bits - kept), size.ratio


def compressed_row(data: Any, budget: Budget, weights: list[np.ndarray], seed: int, matrix: str, method: str,
                   level: int, test: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """Compress ``matrix`` of the dense model with ``method`` at ``level`` (1 or 2), blend, splice, fine-tune."""
    import mutate

    params = LEVELS[matrix][method][level - 1]
    model = build(data, seed)
    model.set_weights(weights)
    shape = next(k.matrix for k in mutate.compressible(model) if k.path == matrix)
    schedule = mutate.Schedule(begin_step=0, end_step=budget.blend_steps - 1,
                               frequency=max(1, budget.blend_steps // budget.updates))
    blended = compiled(mutate.compress(model, {matrix: (method, params)}, schedule), budget.tune_lr)
    train(blended, batches(data, budget.blend_steps, budget.batch, seed + 1), budget.batch,
          [mutate.CompressionCallback()])
    spliced = compiled(mutate.strip(blended), budget.tune_lr)
    train(spliced, batches(data, budget.tune_steps, budget.batch, seed + 2), budget.batch)
    matrix_ratio, model_ratio = ratios(spliced, matrix, shape)
    return {"matrix": matrix, "method": method, "level": level, "params": params,
            "matrix_ratio": matrix_ratio, "model_ratio": model_ratio, "perplexity": perplexity(spliced, test)}


def dense_row(data: Any, budget: Budget, weights: list[np.ndarray], seed: int,
              test: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """The anchor: the dense model trained on the rows' batches, with a fresh Adam at the same two points."""
    model = compiled(build(data, seed), budget.tune_lr)
    model.set_weights(weights)
    train(model, batches(data, budget.blend_steps, budget.batch, seed + 1), budget.batch)
    train(compiled(model, budget.tune_lr), batches(data, budget.tune_steps, budget.batch, seed + 2), budget.batch)
    return {"matrix": "-", "method": "dense", "level": 0, "params": {}, "matrix_ratio": 1.0, "model_ratio": 1.0,
            "perplexity": perplexity(model, test)}


def run_seed(data: Any, budget: Budget, seed: int, test: tuple[np.ndarray, np.ndarray], t0: float,
             only: list[str]) -> list[dict[str, Any]]:
    """The dense prefix, the anchor and every (matrix, method, level) row of one seed."""
    dense = compiled(build(data, seed), budget.lr)
    start = time.perf_counter()
    train(dense, batches(data, budget.dense_steps, budget.batch, seed), budget.batch)
    step_ms = 1000 * (time.perf_counter() - start) / budget.dense_steps
    prefix = perplexity(dense, test)
    print(f"[{time.perf_counter() - t0:6.0f}s] seed {seed}: dense prefix {budget.dense_steps} steps "
          f"({step_ms:.0f} ms/step) ppl {prefix:.1f}", flush=True)
    weights = dense.get_weights()
    rows = [{"matrix": "-", "method": "dense_prefix", "level": 0, "params": {}, "matrix_ratio": 1.0,
             "model_ratio": 1.0, "perplexity": prefix, "steps": budget.dense_steps}]
    jobs: list[tuple[str, str, int]] = [("-", "dense", 0)]
    jobs += [(mx, me, lv) for mx in MATRICES if mx in only for me in METHODS for lv in (1, 2)]
    for matrix, method, level in jobs:
        start = time.perf_counter()
        row = (dense_row(data, budget, weights, seed, test) if method == "dense" else
               compressed_row(data, budget, weights, seed, matrix, method, level, test))
        row["steps"] = budget.dense_steps + budget.blend_steps + budget.tune_steps
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        what = "dense anchor" if method == "dense" else f"{matrix:<9} {method:<10} L{level}"
        print(f"[{time.perf_counter() - t0:6.0f}s] seed {seed}: {what:<26} matrix {row['matrix_ratio']:5.2f}x "
              f"model {row['model_ratio']:5.2f}x  ppl {row['perplexity']:7.1f}  ({row['seconds']:.0f}s)", flush=True)
    return [{"seed": seed, **r} for r in rows]


FIELDS = ("seed", "matrix", "method", "level", "params", "matrix_ratio", "model_ratio", "perplexity", "steps",
          "seconds")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Rows to ``path``; ratios and perplexities rounded, params as ``k=v`` pairs."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "params": " ".join(f"{k}={v}" for k, v in r["params"].items()),
                             "matrix_ratio": f"{r['matrix_ratio']:.3f}", "model_ratio": f"{r['model_ratio']:.3f}",
                             "perplexity": f"{r['perplexity']:.2f}", "seconds": r.get("seconds", "")})


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows written by `write_csv`, with numbers and params parsed back."""
    with path.open(newline="") as f:
        return [{**r, "seed": int(r["seed"]), "level": int(r["level"]), "matrix_ratio": float(r["matrix_ratio"]),
                 "model_ratio": float(r["model_ratio"]), "perplexity": float(r["perplexity"]),
                 "params": {k: int(v) if v.isdigit() else v for k, v in (kv.split("=") for kv in r["params"].split())}}
                for r in csv.DictReader(f)]


def mean_of(rows: list[dict[str, Any]], key: str, **match: Any) -> float:
    """Mean of ``key`` over the rows matching every ``match`` field (over seeds)."""
    values = [r[key] for r in rows if all(r[k] == v for k, v in match.items())]
    return statistics.fmean(values) if values else math.nan


def plot(rows: list[dict[str, Any]], path: Path, matrices: list[str]) -> None:
    """Perplexity against the compressed matrix's ratio (log x), one panel per matrix, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dense = mean_of(rows, "perplexity", method="dense")
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.6), squeeze=False)
    for ax, matrix in zip(axes[0], matrices):
        for method, marker in zip(METHODS, "os^"):
            pts = [(mean_of(rows, "matrix_ratio", matrix=matrix, method=method, level=lv),
                    mean_of(rows, "perplexity", matrix=matrix, method=method, level=lv)) for lv in (1, 2)]
            ax.plot(*zip(*pts), marker=marker, label=method)
        ax.axhline(dense, color="k", ls="--", lw=1, label="dense")
        ax.set_xscale("log")
        ax.set_xticks([6, 8, 12, 16, 20], ["6", "8", "12", "16", "20"])
        ax.set_title(f"{matrix} ({'input kernel' if matrix == 'lstm' else 'matrix'} compressed)")
        ax.set_xlabel("matrix compression ratio (x)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test perplexity")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(rows: list[dict[str, Any]], matrices: list[str]) -> None:
    """Mean perplexity (± std over seeds) per matrix, method and level, with the ratios."""
    print(f"\n{'matrix':<10}{'method':<12}{'lvl':>4}{'matrix x':>10}{'model x':>9}{'perplexity':>18}")
    for matrix in matrices:
        for method in METHODS:
            for lv in (1, 2):
                ppl = [r["perplexity"] for r in rows if (r["matrix"], r["method"], r["level"]) == (matrix, method, lv)]
                spread = f" ±{statistics.pstdev(ppl):.1f}" if len(ppl) > 1 else ""
                print(f"{matrix:<10}{method:<12}{lv:>4}"
                      f"{mean_of(rows, 'matrix_ratio', matrix=matrix, method=method, level=lv):>9.2f}x"
                      f"{mean_of(rows, 'model_ratio', matrix=matrix, method=method, level=lv):>8.2f}x"
                      f"{statistics.fmean(ppl):>11.1f}{spread}")
    for method in ("dense_prefix", "dense"):
        print(f"{method:<26}{1.0:>9.2f}x{1.0:>8.2f}x{mean_of(rows, 'perplexity', method=method):>11.1f}")


def claim(gaps: list[float]) -> str:
    """Whether 'dictionary is slightly better than low-rank' fits relative gaps (dictionary - low_rank) / low_rank.

    It holds when dictionary is lower at every level and by under 5% on the median; lower by more is
    'better by more than slightly'; otherwise it does not hold.
    """
    if all(g < 0 for g in gaps):
        return "holds" if statistics.median(gaps) > -0.05 else "dictionary better by more than slightly"
    return "does NOT hold"


def verdict(rows: list[dict[str, Any]], matrices: list[str]) -> None:
    """Per matrix and level the method ordering, then whether the paper's claim holds per matrix and overall."""
    print("\nOrdering (mean test perplexity over seeds; lower is better):")
    per_matrix: dict[str, list[float]] = {}
    for matrix in matrices:
        parts = []
        for lv in (1, 2):
            ppl = {m: mean_of(rows, "perplexity", matrix=matrix, method=m, level=lv) for m in METHODS}
            order = " < ".join(f"{m} {ppl[m]:.1f}" for m in sorted(ppl, key=ppl.get))
            gap = (ppl["dictionary"] - ppl["low_rank"]) / ppl["low_rank"]
            per_matrix.setdefault(matrix, []).append(gap)
            parts.append(f"L{lv}: {order}; dictionary vs low_rank {100 * gap:+.1f}%")
        print(f"  {matrix:<9}  " + " | ".join(parts))
    print("Claim 'dictionary learning is slightly better than low-rank':")
    verdicts = {matrix: claim(gaps) for matrix, gaps in per_matrix.items()}
    for matrix, gaps in per_matrix.items():
        print(f"  {matrix:<9}  {verdicts[matrix]} (dictionary - low_rank: "
              f"{', '.join(f'{100 * g:+.1f}%' for g in gaps)} at levels 1, 2)")
    held = [m for m, v in verdicts.items() if v == "holds"]
    overall = ("it holds for every matrix" if len(held) == len(verdicts) else
               f"it holds only for {', '.join(held)}" if held else "it holds for no matrix")
    wins = sum(g < 0 for gaps in per_matrix.values() for g in gaps)
    print(f"Overall: {overall}; dictionary was lower in {wins} of {2 * len(per_matrix)} (matrix, level) "
          "comparisons.")


def run(budget: Budget, seeds: int, threads: int, only: list[str]) -> list[dict[str, Any]]:
    """Load the data and run every seed's protocol; returns all rows."""
    t0 = time.perf_counter()
    configure_threads(threads)
    from mutate.data import shakespeare

    data = shakespeare(vocab=10_000, seq_len=budget.seq_len)
    n_test = budget.test_tokens // budget.seq_len
    test = (data.x_test[:n_test], data.y_test[:n_test])
    print(f"shakespeare: {data.x_train.size} train tokens, test subset {test[0].size} tokens; model {MODEL}, "
          f"batch {budget.batch}x{budget.seq_len}, steps dense {budget.dense_steps} + blend {budget.blend_steps} "
          f"+ tune {budget.tune_steps}", flush=True)
    rows: list[dict[str, Any]] = []
    for seed in range(seeds):
        rows += run_seed(data, budget, seed, test, t0, only)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny step counts and test subset (~3-4 min smoke run)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 (each is a full protocol)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op threads")
    parser.add_argument("--replot", action="store_true",
                        help="no training: redo the plot, table and statement from the mode's existing CSV")
    parser.add_argument("--only", nargs="+", choices=MATRICES, default=list(MATRICES),
                        help="compress only these matrices")
    parser.add_argument("--no-balance", action="store_true",
                        help="dictionary rows only, with balance=False (unit-norm atoms); writes *_nobalance.*")
    args = parser.parse_args()
    if args.no_balance:
        global METHODS
        METHODS = ("dictionary",)
        for matrix in MATRICES:
            LEVELS[matrix]["dictionary"] = tuple({**p, "balance": False} for p in LEVELS[matrix]["dictionary"])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    budget = QUICK if args.quick else FULL
    stem = ("lm_comparison_quick" if args.quick else "lm_comparison") + ("_nobalance" if args.no_balance else "")
    t0 = time.perf_counter()
    if args.replot:
        rows = read_csv(HERE / f"{stem}.csv")
        matrices = [m for m in MATRICES if any(r["matrix"] == m for r in rows)]
    else:
        rows, matrices = run(budget, args.seeds, args.threads, args.only), args.only
        write_csv(rows, HERE / f"{stem}.csv")
    plot(rows, HERE / f"{stem}.png", matrices)
    print_table(rows, matrices)
    if not args.no_balance:
        verdict(rows, matrices)
    seeds = len({r["seed"] for r in rows})
    print(f"\n{seeds} seed(s); {time.perf_counter() - t0:.0f}s; wrote {'' if args.replot else stem + '.csv and '}"
          f"{stem}.png")


if __name__ == "__main__":
    main()
