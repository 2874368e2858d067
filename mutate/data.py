"""Built-in datasets. ``digits`` is embedded in scikit-learn and needs no network; Fashion-MNIST is read from
Debian's ``dataset-fashion-mnist`` files or downloaded by Keras."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

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


FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
"""Folders searched for the Fashion-MNIST idx files (Debian's ``dataset-fashion-mnist`` installs the first)."""


def _idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(*, data_dir: str | Path | None = None, flatten: bool = True) -> Dataset:
    """Fashion-MNIST (60k train, 10k test, 28x28, 10 classes) scaled to [0, 1].

    Looks in ``data_dir``, then in `FASHION_MNIST_DIRS` (``apt-get install dataset-fashion-mnist``), then
    falls back to Keras' download (needs the internet).

    Args:
        data_dir: a folder holding ``train-images-idx3-ubyte.gz`` and the three other idx files.
        flatten: x as (N, 784) when True, else (N, 28, 28, 1).

    Raises:
        FileNotFoundError: no local copy was found and the download failed.
    """
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz")
    dirs = [Path(data_dir)] if data_dir is not None else list(FASHION_MNIST_DIRS)
    found = next((d for d in dirs if all((d / n).is_file() for n in names)), None)
    if found is not None:
        x_tr, y_tr, x_te, y_te = (_idx(found / n) for n in names)
    elif data_dir is not None:
        missing = [n for n in names if not (Path(data_dir) / n).is_file()]
        raise FileNotFoundError(f"fashion_mnist: data_dir={str(data_dir)!r} lacks {', '.join(missing)}")
    else:
        try:
            import keras

            (x_tr, y_tr), (x_te, y_te) = keras.datasets.fashion_mnist.load_data()
        except Exception as e:  # noqa: BLE001 - any download failure means the same thing to the user
            raise FileNotFoundError("fashion_mnist: no local copy in /usr/share/datasets/fashion-mnist "
                                    "(apt-get install dataset-fashion-mnist) and the download failed: "
                                    f"{type(e).__name__}: {e}") from None
    shape = (-1, 784) if flatten else (-1, 28, 28, 1)
    x_tr = (x_tr.reshape(shape) / 255.0).astype(np.float32)
    x_te = (x_te.reshape(shape) / 255.0).astype(np.float32)
    return Dataset("fashion_mnist", x_tr, y_tr.astype(np.int64), x_te, y_te.astype(np.int64), 10)
