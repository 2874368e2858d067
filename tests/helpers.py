"""Small Keras models and data shared by the TensorFlow tests."""

from __future__ import annotations

import keras
import numpy as np

import mutate


def mlp(widths: tuple[int, ...] = (16, 32, 32, 24, 5), seed: int = 0) -> keras.Model:
    """Sequential MLP; layer i is named ``dense_i``; the last layer has no activation."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((widths[0],))]
    for i, w in enumerate(widths[1:]):
        last = i == len(widths) - 2
        layers.append(keras.layers.Dense(w, activation=None if last else "relu", name=f"dense_{i}"))
    return keras.Sequential(layers, name="mlp")


def data(n: int = 64, features: int = 16, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    return x, rng.integers(0, classes, n)


def compile_(model: keras.Model, lr: float = 1e-2) -> keras.Model:
    model.compile(keras.optimizers.SGD(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int = 1, batch_size: int = 16) -> None:
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=False, verbose=0,
              callbacks=[mutate.CompressionCallback()])


def state(model: keras.Model, path: str):
    """The KernelState of the compressed kernel at ``path``."""
    found = mutate.kernel(model, path).compression
    assert found is not None, f"{path} is not compressed"
    return found
