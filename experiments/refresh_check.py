"""Does the in-graph refresh (a warm-started subspace iteration) train as well as the exact SVD refresh it
replaced? A study, not a test.

    .venv/bin/python experiments/refresh_check.py            # 2 seeds, ~2 minutes on 2 cores
    KERAS_BACKEND=jax .venv/bin/python experiments/refresh_check.py   # JAX: the graph rule's shifts

LeNet-300-100 on Fashion-MNIST (batch 128, Adam 1e-3): 2 dense epochs; then low_rank (fc1 rank 16, fc2
rank 12; ranks of the bench) blended over 2 epochs with ``refresh=True`` and an update every 25 steps (as the
search runs it), alpha 1 -> 0; then 1 epoch spliced. Two refresh rules from the same dense weights:
``exact``, the host SVD of every update (`LowRank.factor`, before this change), and ``graph``, the subspace
iteration in the training step (`LowRank.refreshed_tensor`, the default on TensorFlow and JAX; on JAX a
refreshed factor moves through its non-trainable shift). Nothing is chosen: each row's test accuracy is
measured once, at the end. Writes ``refresh_check.txt`` (``refresh_check_jax.txt`` on JAX).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import keras

import mutate
import operators
from mutate.data import fashion_mnist
from operators._base import Compressor
from operators.low_rank import LowRank

HERE = Path(__file__).resolve().parent


def lenet(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, activation="relu", name="fc1"),
                             keras.layers.Dense(100, activation="relu", name="fc2"), keras.layers.Dense(10, name="fc3")])


def run(seed: int, rule: str, data, dense_weights: list) -> tuple[float, float]:
    """Test accuracy after blend + fine-tune under ``rule``, and the seconds the blend epochs took."""
    graph = (LowRank.refreshed_tensor, LowRank.refreshed)
    if rule == "exact":  # no in-graph refresh: the callback factors A afresh (exact SVD) at every update
        LowRank.refreshed_tensor, LowRank.refreshed = Compressor.refreshed_tensor, Compressor.refreshed
    try:
        model = lenet(seed)
        model.set_weights(dense_weights)
        steps = len(data.x_train) // 128
        c = mutate.compress(model, {"fc1": ("low_rank", {"rank": 16}), "fc2": ("low_rank", {"rank": 12})},
                            mutate.Schedule(0, 2 * steps - 1, 25), refresh=True)
        assert mutate.kernel(c, "fc1").compression.graph_refresh == (rule == "graph" and
                                                                     keras.backend.backend() in ("tensorflow", "jax"))
        c.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
        keras.utils.set_random_seed(seed)
        t = time.perf_counter()
        c.fit(data.x_train, data.y_train, batch_size=128, epochs=2, verbose=0, callbacks=[mutate.CompressionCallback()])
        blend_s = time.perf_counter() - t
        s = mutate.strip(c)
        s.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
        s.fit(data.x_train, data.y_train, batch_size=128, epochs=1, verbose=0)
        return float(s.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)["accuracy"]), blend_s
    finally:
        LowRank.refreshed_tensor, LowRank.refreshed = graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    assert operators.get("low_rank", rank=2).graph_refresh
    data = fashion_mnist()
    lines = [f"LeNet-300-100, Fashion-MNIST, low_rank fc1 r=16 fc2 r=12, refresh every 25 steps over 2 epochs, "
             f"{keras.backend.backend()} backend"]
    for seed in args.seeds:
        dense = lenet(seed)
        dense.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        dense.fit(data.x_train, data.y_train, batch_size=128, epochs=2, verbose=0)
        weights = dense.get_weights()
        for rule in ("exact", "graph"):
            acc, secs = run(seed, rule, data, weights)
            lines.append(f"seed {seed}  {rule:5s}  test accuracy {acc:.4f}  blend epochs {secs:.1f}s")
            print(lines[-1], flush=True)
    backend = keras.backend.backend()
    (HERE / ("refresh_check.txt" if backend == "tensorflow" else f"refresh_check_{backend}.txt")).write_text(
        "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
