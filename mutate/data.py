"""Built-in datasets. ``digits`` is embedded in scikit-learn and needs no network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays: x (N, ...) float32, y (N,) int64 class ids."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int


def digits(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images) as 64 features in [0, 1], split with a fixed stratified seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=test_fraction, random_state=seed,
                                              stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)
