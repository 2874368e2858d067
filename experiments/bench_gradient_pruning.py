"""Gradient (saliency) pruning against magnitude pruning at 90% and 95% sparsity on LeNet-300-100.

    .venv/bin/python experiments/bench_gradient_pruning.py [--quick] [--seeds 3]

Each seed trains one dense LeNet-300-100 (784-300-100-10) on Fashion-MNIST (digits with --quick), then, from
the same dense weights, compresses every layer with `pruning` or `gradient_pruning` at each sparsity, blends
over a window with refresh (the mask is re-chosen at every update from the current weights, or from the
saliency EMA), splices, and fine-tunes; equal steps for both methods. Prints a table and writes
``bench_gradient_pruning.csv`` next to this script.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import mutate  # noqa: E402
from mutate.data import digits, fashion_mnist  # noqa: E402


def lenet(inputs: int, classes: int) -> keras.Model:
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(300, activation="relu", name="fc1"),
                             keras.layers.Dense(100, activation="relu", name="fc2"),
                             keras.layers.Dense(classes, name="logits")], name="lenet_300_100")


def compiled(model: keras.Model, lr: float) -> keras.Model:
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and fewer epochs (a smoke run)")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    data = digits() if args.quick else fashion_mnist()
    dense_epochs, blend_epochs, tune_epochs, batch = (10, 3, 2, 32) if args.quick else (8, 3, 3, 128)
    steps = -(-len(data.x_train) // batch)
    rows: list[dict[str, object]] = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        keras.utils.set_random_seed(seed)
        dense = compiled(lenet(data.x_train.shape[1], data.num_classes), 1e-3)
        dense.fit(data.x_train, data.y_train, epochs=dense_epochs, batch_size=batch, verbose=0)
        dense_acc = dense.evaluate(data.x_test, data.y_test, verbose=0)[1]
        rows.append({"seed": seed, "method": "dense", "sparsity": 0.0, "accuracy": dense_acc})
        print(f"[{time.perf_counter() - t0:6.0f}s] seed {seed}: dense {dense_acc:.4f}", flush=True)
        weights = dense.get_weights()
        for sparsity in (0.9, 0.95):
            for method in ("pruning", "gradient_pruning"):
                keras.utils.set_random_seed(seed)
                model = compiled(lenet(data.x_train.shape[1], data.num_classes), 1e-3)
                model.set_weights(weights)
                schedule = mutate.Schedule(begin_step=0, end_step=blend_epochs * steps - 1,
                                           frequency=max(1, steps // 4))
                blended = compiled(mutate.compress(model, {"*": (method, {"sparsity": sparsity})}, schedule,
                                                   refresh=True), 5e-4)
                blended.fit(data.x_train, data.y_train, epochs=blend_epochs, batch_size=batch, verbose=0,
                            callbacks=[mutate.CompressionCallback()])
                spliced = compiled(mutate.strip(blended), 5e-4)
                spliced.fit(data.x_train, data.y_train, epochs=tune_epochs, batch_size=batch, verbose=0)
                acc = spliced.evaluate(data.x_test, data.y_test, verbose=0)[1]
                ratio = mutate.model_size(spliced).ratio
                rows.append({"seed": seed, "method": method, "sparsity": sparsity, "accuracy": acc, "ratio": ratio})
                print(f"[{time.perf_counter() - t0:6.0f}s] seed {seed}: {method:<17} {sparsity:.2f} "
                      f"accuracy {acc:.4f} ({ratio:.1f}x fewer bits)", flush=True)
    out = Path(__file__).with_name("bench_gradient_pruning_quick.csv" if args.quick else "bench_gradient_pruning.csv")
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["seed", "method", "sparsity", "accuracy", "ratio"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{data.name}, {args.seeds} seeds; dense {dense_epochs} epochs, blend {blend_epochs}, fine-tune {tune_epochs}")
    print(f"{'sparsity':>8} {'magnitude':>18} {'gradient':>18} {'gradient - magnitude':>22}")
    for sparsity in (0.9, 0.95):
        acc = {m: np.array([r["accuracy"] for r in rows if r["method"] == m and r["sparsity"] == sparsity])
               for m in ("pruning", "gradient_pruning")}
        diff = acc["gradient_pruning"] - acc["pruning"]
        print(f"{sparsity:>8.2f} {acc['pruning'].mean():>10.4f} ±{acc['pruning'].std():.4f} "
              f"{acc['gradient_pruning'].mean():>10.4f} ±{acc['gradient_pruning'].std():.4f} "
              f"{100 * diff.mean():>+14.2f} pts (per seed: {' '.join(f'{100 * d:+.2f}' for d in diff)})")
    dense = np.array([r["accuracy"] for r in rows if r["method"] == "dense"])
    print(f"dense {dense.mean():.4f} ±{dense.std():.4f}; rows in {out.name}")


if __name__ == "__main__":
    main()
