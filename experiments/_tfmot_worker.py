"""TFMOT anchors for LeNet-300-100: the worker that runs inside the TFMOT virtual environment.

Started by ``experiments/anchors_tfmot.py``, never imported by mutate; it needs tf_keras and
tensorflow-model-optimization, which mutate must not depend on:

    TF_USE_LEGACY_KERAS=1 ~/.cache/mutate/venv-tfmot/bin/python experiments/_tfmot_worker.py \\
        --data data.npz --mode full --seeds 1 --out rows.json

Per seed it trains one dense model and, from those dense weights, the dense anchor, TFMOT magnitude pruning
(90%, 95%) and TFMOT weight clustering (k = 16, 4) under the shared protocol of ``protocol.py``. It writes
the rows (model, seed, method, level, accuracy, bits, ratio) as JSON and prints one line per finished model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protocol  # noqa: E402

MODEL = "lenet"
SPARSITIES = (0.9, 0.95)
CLUSTERS = (16, 4)
SPARSITY_TOLERANCE = 2e-3
"""PolynomialDecay prunes only every ``frequency`` steps, so its last update may fall a few steps before
``end_step``: the reached sparsity can lie this far below the target."""

Data = dict[str, np.ndarray]
Row = dict[str, Any]
Result = tuple[float, int, str]
"""(test accuracy, stored bits, a note for the progress line)."""


def lenet(inputs: int, classes: int) -> tf.keras.Model:
    """LeNet-300-100 with the layer names of ``protocol.COMPRESSED``, uncompiled."""
    return tf.keras.Sequential([tf.keras.Input((inputs,)),
                                tf.keras.layers.Dense(300, activation="relu", name="fc1"),
                                tf.keras.layers.Dense(100, activation="relu", name="fc2"),
                                tf.keras.layers.Dense(classes, name="logits")], name="lenet_300_100")


def compiled(model: tf.keras.Model, lr: float) -> tf.keras.Model:
    """Compile with a fresh Adam at ``lr`` and the logits cross-entropy; returns ``model``."""
    model.compile(tf.keras.optimizers.Adam(lr), tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(model: tf.keras.Model, data: Data, p: protocol.Protocol, epochs: int,
        callbacks: list[tf.keras.callbacks.Callback] | None = None) -> None:
    """Train ``model`` on the training split for ``epochs`` epochs at the protocol's batch size."""
    model.fit(data["x_train"], data["y_train"], batch_size=p.batch, epochs=epochs, verbose=0,
              callbacks=callbacks or [])


def accuracy(model: tf.keras.Model, data: Data) -> float:
    """Test accuracy from the argmax of the logits."""
    logits = model.predict(data["x_test"], batch_size=1024, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == data["y_test"]))


def from_dense(weights: list[np.ndarray], data: Data) -> tf.keras.Model:
    """A new LeNet holding the dense weights."""
    model = lenet(data["x_train"].shape[1], int(data["y_train"].max()) + 1)
    model.set_weights(weights)
    return model


def wrapped(model: tf.keras.Model, wrap: Callable[[tf.keras.layers.Layer], tf.keras.layers.Layer]) -> tf.keras.Model:
    """Clone ``model`` with ``wrap`` applied to the compressed layers only (the others are reused as they are)."""
    names = protocol.COMPRESSED[MODEL]
    return tf.keras.models.clone_model(model,
                                       clone_function=lambda layer: wrap(layer) if layer.name in names else layer)


def bits(model: tf.keras.Model, kernel_bits: Callable[[np.ndarray], int]) -> int:
    """Stored bits: ``kernel_bits`` for the kernels of the compressed layers, 32 per float for the rest."""
    total = 0
    for layer in model.layers:
        for weight in layer.weights:
            value = weight.numpy()
            is_kernel = layer.name in protocol.COMPRESSED[MODEL] and value.ndim == 2
            total += kernel_bits(value) if is_kernel else 32 * value.size
    return total


def dense_bits(model: tf.keras.Model) -> int:
    """32 bits per parameter of the whole model."""
    return 32 * int(model.count_params())


def pruned_kernel_bits(sparsity: float) -> Callable[[np.ndarray], int]:
    """Kernel bits under ``protocol.pruned_bits``, checking that ``sparsity`` was reached."""
    def count(kernel: np.ndarray) -> int:
        kept = int(np.count_nonzero(kernel))
        reached = 1.0 - kept / kernel.size
        if reached < sparsity - SPARSITY_TOLERANCE:
            raise RuntimeError(f"pruned kernel {kernel.shape} reached sparsity {reached:.4f} < {sparsity}")
        return protocol.pruned_bits(*kernel.shape, kept=kept)
    return count


def clustered_kernel_bits(k: int) -> Callable[[np.ndarray], int]:
    """Kernel bits under ``protocol.clustered_bits``, checking that the kernel holds at most k values."""
    def count(kernel: np.ndarray) -> int:
        distinct = np.unique(kernel).size
        if distinct > k:
            raise RuntimeError(f"clustered kernel {kernel.shape} holds {distinct} distinct values > k={k}")
        return protocol.clustered_bits(*kernel.shape, k)
    return count


def sparsity_of(model: tf.keras.Model) -> float:
    """Fraction of zeros over the kernels of the compressed layers."""
    kernels = [model.get_layer(name).kernel.numpy() for name in protocol.COMPRESSED[MODEL]]
    return 1.0 - sum(int(np.count_nonzero(k)) for k in kernels) / sum(k.size for k in kernels)


def steps_per_epoch(data: Data, p: protocol.Protocol) -> int:
    """Batches per epoch (the last one partial)."""
    return math.ceil(len(data["x_train"]) / p.batch)


def train_dense(data: Data, p: protocol.Protocol) -> tf.keras.Model:
    """Step 1 of the protocol: ``dense_epochs`` of dense training at ``lr``."""
    model = compiled(lenet(data["x_train"].shape[1], int(data["y_train"].max()) + 1), p.lr)
    fit(model, data, p, p.dense_epochs)
    return model


def dense_anchor(weights: list[np.ndarray], data: Data, p: protocol.Protocol) -> Result:
    """Steps 2 and 3 without compression; returns (accuracy, bits, note)."""
    model = compiled(from_dense(weights, data), p.tune_lr)
    fit(model, data, p, p.blend_epochs + p.tune_epochs)
    return accuracy(model, data), dense_bits(model), ""


def tfmot_prune(weights: list[np.ndarray], data: Data, p: protocol.Protocol, sparsity: float) -> Result:
    """TFMOT magnitude pruning of the compressed layers to ``sparsity``; returns (accuracy, bits, note)."""
    steps = steps_per_epoch(data, p)
    schedule = tfmot.sparsity.keras.PolynomialDecay(initial_sparsity=0.0, final_sparsity=sparsity, begin_step=0,
                                                    end_step=p.blend_epochs * steps,
                                                    frequency=max(1, steps // p.updates_per_epoch))
    model = wrapped(from_dense(weights, data),
                    lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule))
    fit(compiled(model, p.tune_lr), data, p, p.blend_epochs + p.tune_epochs,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    return (accuracy(stripped, data), bits(stripped, pruned_kernel_bits(sparsity)),
            f"sparsity {sparsity_of(stripped):.4f}")


def tfmot_cluster(weights: list[np.ndarray], data: Data, p: protocol.Protocol, k: int) -> Result:
    """TFMOT weight clustering of the compressed layers to k centroids (k-means++); returns (accuracy, bits, note)."""
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
    model = wrapped(from_dense(weights, data),
                    lambda layer: tfmot.clustering.keras.cluster_weights(layer, number_of_clusters=k,
                                                                         cluster_centroids_init=init))
    fit(compiled(model, p.tune_lr), data, p, p.blend_epochs + p.tune_epochs)
    stripped = tfmot.clustering.keras.strip_clustering(model)
    distinct = [np.unique(stripped.get_layer(n).kernel.numpy()).size for n in protocol.COMPRESSED[MODEL]]
    return (accuracy(stripped, data), bits(stripped, clustered_kernel_bits(k)),
            f"distinct values {'/'.join(map(str, distinct))}")


def run_seed(seed: int, data: Data, p: protocol.Protocol, say: Callable[[str], None]) -> list[Row]:
    """The five models of one seed, each re-seeded with ``seed`` so that the order does not matter."""
    tf.keras.utils.set_random_seed(seed)
    dense = train_dense(data, p)
    weights, reference = dense.get_weights(), dense_bits(dense)
    say(f"seed {seed} dense ({p.dense_epochs} epochs) accuracy {accuracy(dense, data):.4f}")
    jobs: list[tuple[str, Any, Callable[[], Result]]] = [
        ("dense_tfkeras", "", lambda: dense_anchor(weights, data, p))]
    jobs += [("tfmot_prune", s, lambda s=s: tfmot_prune(weights, data, p, s)) for s in SPARSITIES]
    jobs += [("tfmot_cluster", k, lambda k=k: tfmot_cluster(weights, data, p, k)) for k in CLUSTERS]
    rows = []
    for method, level, job in jobs:
        tf.keras.utils.set_random_seed(seed)
        acc, size, note = job()
        rows.append({"model": MODEL, "seed": seed, "method": method, "level": level, "accuracy": acc,
                     "bits": size, "ratio": reference / size})
        label = f"{level:.2f}" if isinstance(level, float) else f"k={level}" if level else "-"
        say(f"seed {seed} {method} {label} accuracy {acc:.4f} ({reference / size:.1f}x{', ' + note if note else ''})")
    return rows


def main() -> None:
    """Parse the arguments, run every seed and write the rows as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--mode", choices=sorted(protocol.LENET), default="full")
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1")
    parser.add_argument("--out", required=True, help="JSON file for the rows")
    args = parser.parse_args()
    with np.load(args.data) as npz:
        data = {name: npz[name] for name in ("x_train", "y_train", "x_test", "y_test")}
    p = protocol.LENET[args.mode]
    t0 = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - t0:5.0f}s] {line}", flush=True)

    rows = [row for seed in range(args.seeds) for row in run_seed(seed, data, p, say)]
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
