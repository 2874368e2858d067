"""Method comparison after graph_compression's plots, with the anchors, on Fashion-MNIST.

    .venv/bin/python experiments/method_comparison.py --model lenet          # ~15-25 min on 2 CPU cores
    .venv/bin/python experiments/method_comparison.py --model cnn            # 2 levels per method, ~30 min
    .venv/bin/python experiments/method_comparison.py --quick                # digits, 2 levels per method, ~3 min
    .venv/bin/python experiments/method_comparison.py --model lenet --no-tfmot
    .venv/bin/python experiments/method_comparison.py --model lenet --seeds 2 --methods kmeans --no-tfmot --merge

Per seed, one dense model trains for the protocol's dense epochs (`experiments/protocol.py`). From those same
weights every (method, level) row compresses the protocol's layers (LeNet: fc1, fc2; CNN: conv_2, dense_1)
with that one method, blends them in (alpha 1 -> 0, factors refreshed from the current weights at every
update, except k-means, which is clustered once: `Compressor.refreshable`), splices them, and fine-tunes: equal total steps for every row. In the same run: the dense anchor
(the same extra epochs, no compression), post-hoc SVD truncation of the final dense model with no
fine-tuning, and, for LeNet, TFMOT pruning and clustering trained by the same protocol in a separate
tf_keras virtual environment (`anchors_tfmot.py`). Writes ``method_comparison_<model>[_quick].csv`` and
``.png`` next to this script, and prints the best row per method under the issue's two targets.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
import mutate  # noqa: E402
from mutate.search.builders import cnn  # noqa: E402
from mutate.data import Dataset, digits, fashion_mnist  # noqa: E402
from comparison_plot import mean_rows, most_compressed, plot_comparison  # noqa: E402
from protocol import CNN, COMPRESSED, LENET, Protocol  # noqa: E402

LEVELS: dict[str, list[dict[str, Any]]] = {
    "low_rank": [{"rank": r} for r in (32, 16, 8, 4)],
    "pruning": [{"sparsity": s} for s in (0.8, 0.9, 0.95, 0.98)],
    "gradient_pruning": [{"sparsity": s} for s in (0.8, 0.9, 0.95, 0.98)],
    "kmeans": [{"k": k} for k in (16, 8, 4, 2)],
    "simhash": [{"rank": r} for r in (2048, 1024, 512, 256)],
    "dictionary": [{"atoms": a, "n_nonzero": s} for a, s in ((128, 8), (64, 4), (32, 2), (16, 2))],
    "kmeans_vq": [{"k": k, "block_size": b} for k, b in ((256, 10), (128, 10), (64, 10), (64, 20))],
}
"""Each method's levels, from mild to strong; the same parameters for every compressed layer."""

OPERATOR = {"kmeans_vq": "kmeans"}
"""Methods that are another operator's setting: ``kmeans_vq`` is vector k-means on blocks of 10 or 20
consecutive weights of a row (product quantization), LeNet only: the blocks must divide every compressed
layer's columns (300 and 100; the CNN's 64 and 128 are not multiples of 10)."""
DEFAULT_METHODS = {"lenet": list(LEVELS), "cnn": [m for m in LEVELS if m != "kmeans_vq"]}

SVD_RANKS = (32, 20, 16, 8)
FIELDS = ["model", "seed", "method", "level", "accuracy", "bits", "ratio", "seconds"]


def lenet(data: Dataset) -> keras.Model:
    """LeNet-300-100: fc1 (784x300), fc2 (300x100), logits (100x10)."""
    return keras.Sequential([keras.Input(data.x_train.shape[1:]),
                             keras.layers.Dense(300, activation="relu", name="fc1"),
                             keras.layers.Dense(100, activation="relu", name="fc2"),
                             keras.layers.Dense(data.num_classes, name="logits")], name="lenet_300_100")


def small_cnn(data: Dataset) -> keras.Model:
    """mutate's built-in CNN: conv_1 (3x3x1x32), conv_2 (3x3x32x64), dense_1 (3136x128), logits."""
    return cnn(data, filters=[32, 64], kernel_size=3, hidden=[128])


BUILDERS: dict[str, Callable[[Dataset], keras.Model]] = {"lenet": lenet, "cnn": small_cnn}


def compiled(model: keras.Model, lr: float) -> keras.Model:
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def accuracy(model: keras.Model, data: Dataset) -> float:
    return float(model.evaluate(data.x_test, data.y_test, batch_size=512, verbose=0)[1])


def level_name(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


def splice_run(name: str, data: Dataset, p: Protocol, weights: list[np.ndarray], method: str,
               params: dict[str, Any], seed: int) -> keras.Model:
    """Compress the protocol's layers with one method, blend, splice and fine-tune; returns the spliced model."""
    keras.utils.set_random_seed(seed)
    model = BUILDERS[name](data)
    model.set_weights(weights)
    steps = -(-len(data.x_train) // p.batch)
    schedule = mutate.Schedule(begin_step=0, end_step=p.blend_epochs * steps - 1,
                               frequency=max(1, steps // p.updates_per_epoch))
    plan = {layer: (OPERATOR.get(method, method), params) for layer in COMPRESSED[name]}
    blended = compiled(mutate.compress(model, plan, schedule, refresh=True), p.tune_lr)
    blended.fit(data.x_train, data.y_train, epochs=p.blend_epochs, batch_size=p.batch, verbose=0,
                callbacks=[mutate.CompressionCallback()])
    spliced = compiled(mutate.strip(blended), p.tune_lr)
    spliced.fit(data.x_train, data.y_train, epochs=p.tune_epochs, batch_size=p.batch, verbose=0)
    return spliced


def posthoc_svd(name: str, data: Dataset, model: keras.Model, rank: int) -> tuple[float, int]:
    """Accuracy and stored bits of ``model`` with the compressed layers' kernels truncated to ``rank`` by SVD."""
    clone = compiled(BUILDERS[name](data), 1e-3)
    clone.set_weights(model.get_weights())
    saved = 0
    for layer_name in COMPRESSED[name]:
        layer = clone.get_layer(layer_name)
        kernel = layer.kernel.numpy()
        a = kernel.reshape(-1, kernel.shape[-1])
        u, s, vt = np.linalg.svd(a.astype(np.float64), full_matrices=False)
        r = min(rank, len(s))
        layer.kernel.assign(((u[:, :r] * s[:r]) @ vt[:r]).reshape(kernel.shape).astype(np.float32))
        saved += 32 * (a.size - r * sum(a.shape))
    return accuracy(clone, data), mutate.model_size(clone).bits - saved


class Study:
    """Runs the rows of one model and seed, appending each to the CSV as it finishes."""

    def __init__(self, name: str, data: Dataset, p: Protocol, out: Path) -> None:
        self.name, self.data, self.p, self.out = name, data, p, out
        self.t0 = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    def add(self, seed: int, method: str, level: str, acc: float, bits: int, dense_bits: int, t: float) -> None:
        row = {"model": self.name, "seed": seed, "method": method, "level": level, "accuracy": round(acc, 5),
               "bits": int(bits), "ratio": round(dense_bits / bits, 3), "seconds": round(time.perf_counter() - t, 1)}
        self.rows.append(row)
        with self.out.open("a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)
        print(f"[{time.perf_counter() - self.t0:6.0f}s] {self.name} seed {seed} {method:<17} {level:<22} "
              f"accuracy {acc:.4f} ({row['ratio']:.1f}x fewer bits)", flush=True)

    def seed(self, seed: int, methods: list[str], half: bool = False) -> None:
        p, data = self.p, self.data
        t = time.perf_counter()
        keras.utils.set_random_seed(seed)
        dense = compiled(BUILDERS[self.name](data), p.lr)
        dense.fit(data.x_train, data.y_train, epochs=p.dense_epochs, batch_size=p.batch, verbose=0)
        weights = dense.get_weights()
        dense_bits = mutate.model_size(dense).dense_bits
        print(f"[{time.perf_counter() - self.t0:6.0f}s] {self.name} seed {seed} dense prefix "
              f"({p.dense_epochs} epochs) accuracy {accuracy(dense, data):.4f}", flush=True)
        compiled(dense, p.tune_lr).fit(data.x_train, data.y_train, epochs=p.blend_epochs + p.tune_epochs,
                                        batch_size=p.batch, verbose=0)
        self.add(seed, "dense", "", accuracy(dense, data), dense_bits, dense_bits, t)
        for rank in SVD_RANKS:
            t = time.perf_counter()
            acc, bits = posthoc_svd(self.name, data, dense, rank)
            self.add(seed, "posthoc_svd", f"rank={rank}", acc, bits, dense_bits, t)
        for method in methods:
            for params in LEVELS[method][1::2] if half else LEVELS[method]:
                t = time.perf_counter()
                spliced = splice_run(self.name, data, p, weights, method, params, seed)
                self.add(seed, method, level_name(params), accuracy(spliced, data),
                         mutate.model_size(spliced).bits, dense_bits, t)


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Lines stating the best ratio within 0.3 and 1 point of dense over mutate's methods (means over seeds)."""
    means = mean_rows(rows)
    dense = means["dense"][0][1]
    lines = [f"dense accuracy {dense:.4f}"]
    for drop, goal in ((0.003, 10), (0.01, 30)):
        found = [(p, m) for m in LEVELS if (p := most_compressed(means.get(m, []), dense - drop)) is not None]
        if not found:
            lines.append(f"within {100 * drop:.1f} pts: no row")
            continue
        (ratio, acc, level), method = max(found)
        verdict = "reached" if ratio >= goal else "MISSED"
        lines.append(f"within {100 * drop:.1f} pts of dense: best {ratio:.1f}x ({method} {level}, accuracy "
                     f"{acc:.4f}); target {goal}x {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("lenet", "cnn"), default="lenet")
    parser.add_argument("--quick", action="store_true", help="digits instead of Fashion-MNIST (a smoke run)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--methods", nargs="+", choices=sorted(LEVELS),
                        help="default: every method (the CNN skips kmeans_vq)")
    parser.add_argument("--no-tfmot", action="store_true", help="skip the TFMOT anchors (separate venv)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the existing CSV's rows of every method this run does not produce")
    args = parser.parse_args()
    methods = args.methods or DEFAULT_METHODS[args.model]
    mode = "quick" if args.quick else "full"
    p = (LENET if args.model == "lenet" else CNN)[mode]
    data = digits() if args.quick else fashion_mnist()
    stem = f"method_comparison_{args.model}{'_quick' if args.quick else ''}"
    out = HERE / f"{stem}.csv"
    produced = {"dense", "posthoc_svd", *methods} | (set() if args.no_tfmot or args.model != "lenet" else
                                                      {"dense_tfkeras", "tfmot_prune", "tfmot_cluster"})
    kept = [r for r in csv.DictReader(out.open())
            if r["method"] not in produced] if args.merge and out.exists() else []
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(kept)
    study = Study(args.model, data, p, out)
    study.rows.extend(kept)
    if args.model == "lenet" and not args.no_tfmot:
        from anchors_tfmot import run_tfmot

        for row in run_tfmot(mode, args.seeds):
            row = {**row, "seconds": row.get("seconds", "")}
            study.rows.append({k: row.get(k, "") for k in FIELDS})
            with out.open("a", newline="") as f:
                csv.DictWriter(f, FIELDS).writerow(study.rows[-1])
    for seed in range(args.seeds):
        study.seed(seed, methods, args.quick or args.model == "cnn")
    png = plot_comparison(study.rows, HERE / f"{stem}.png", title=f"{args.model} on {data.name}")
    print("\n".join(targets(study.rows)))
    print(f"rows in {out.name}, plot in {png.name}; {time.perf_counter() - study.t0:.0f} s")


if __name__ == "__main__":
    main()
