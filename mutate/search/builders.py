"""Built-in models and datasets for search spaces, and ``package.module:function`` user builders.

A user builder is imported only from the name the YAML gives, and runs arbitrary code: treat a search
space like a script. Model builders are called as ``fn(data=Dataset, **kwargs)`` and return a Keras model;
data builders as ``fn(**kwargs)`` and return a `mutate.data.Dataset`.

Whatever a user builder raises is the user's to fix (`mutate.errors.BadInput`); a built-in one raising
anything but ``TypeError``/``ValueError`` (what a bad keyword or value gives) is a bug here and propagates.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from mutate import data as datasets
from mutate.errors import BadInput, MissingInput


def import_callable(spec: str, key: str, where: str) -> Callable[..., Any]:
    """``package.module:function`` -> the function.

    Raises:
        BadInput: malformed, the module cannot be imported (or raises on import), or the attribute is missing
            or not callable.
    """
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise BadInput(f"{where}: {key}: expected package.module:function, got {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise BadInput(f"{where}: {key}: cannot import module {module!r} ({e})") from None
    except Exception as e:  # noqa: BLE001 - the user's module runs on import; whatever it raises is theirs
        raise BadInput(f"{where}: {key}: cannot import module {module!r} ({type(e).__name__}: {e})") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise BadInput(f"{where}: {key}: module {module!r} has no function {attr!r}")
    return fn


def importable_beside(space: Any) -> None:
    """Make the modules in the space file's folder importable, as a user who keeps ``models.py`` next to
    ``space.yaml`` expects: the folder is appended to ``sys.path`` and to ``PYTHONPATH`` (which an embedded
    Ray's trial processes inherit). Appended, never prepended, so it cannot shadow an installed module; a
    space with no file (built from a dict) changes nothing. On a cluster, the module must be importable on
    every node (installed, or on a shared path in the nodes' ``PYTHONPATH``)."""
    path = getattr(space, "path", None)
    if path is None or not any(":" in str(n) for n in (space.model.get("builder", ""), space.data.get("name", ""))):
        return
    folder = str(Path(path).resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    parts = [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
    if folder not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([*parts, folder])


def import_user_modules(space: Any) -> None:
    """Import the modules of a space's user builder and data loader (``package.module:function``), so the
    classes they register with Keras (a subclassed model, a custom layer) are known before a run's checkpoint
    loads (`mutate export`, `mutate pareto --sizes`, the final test evaluation).

    Raises:
        BadInput: a module cannot be imported (named with the key), as when the search started.
    """
    importable_beside(space)
    for key, name in (("model.builder", space.model["builder"]), ("data.name", space.data["name"])):
        if ":" in str(name):
            import_callable(str(name), key, space.where)


def _kwargs(section: dict[str, Any], first: str) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k != first}


def load_data(section: dict[str, Any], where: str) -> datasets.Dataset:
    """The dataset a space's ``data`` section names.

    Raises:
        BadInput: an unknown keyword or a bad value, a user loader that raises or returns no Dataset.
        MissingInput: a data file is missing (also a ``FileNotFoundError``).
    """
    name, kwargs = section["name"], _kwargs(section, "name")
    user = ":" in name
    fn = import_callable(name, "data.name", where) if user else getattr(datasets, name)

    def told(e: Exception) -> str:  # a loader's message names it already ("ptb: ..."): once is enough
        return str(e).removeprefix(f"{name}: ")

    try:
        out = fn(**kwargs)
    except FileNotFoundError as e:
        raise MissingInput(f"{where}: data.name: {name}: {told(e)}") from None
    except Exception as e:  # noqa: BLE001 - a user loader may raise anything; report it on one line
        if isinstance(e, TypeError) and not _binds(fn, kwargs):
            raise BadInput(f"{where}: data: {name} {_mismatch(fn, kwargs, 'data')} ({e})") from None
        if not (user or isinstance(e, (ValueError, TypeError))):
            raise
        raise BadInput(f"{where}: data.name: {name} raised {type(e).__name__}: {told(e)}"
                       f"{_called('data', kwargs, user)}") from None
    if not isinstance(out, datasets.Dataset):
        raise BadInput(f"{where}: data.name: {name} returned {type(out).__name__}, not a mutate.data.Dataset")
    return checked_dataset(out, f"{where}: data.name: {name}")


def checked_dataset(data: datasets.Dataset, named: str) -> datasets.Dataset:
    """``data`` with its arrays as NumPy arrays, labels of shape (N, 1) (Keras' CIFAR layout) as (N,), integral
    float labels as int64 and ``num_classes`` as an int; what would fail mid-search (or silently train on
    something else) is refused here.

    Raises:
        BadInput: ``named`` (the file and key) and what is wrong: a split whose x and y lengths differ, an
            empty split, train and test features of different shapes, NaN/Inf features, labels that are not
            integers in ``0..num_classes-1``, a ``num_classes`` that is not a positive integer.
    """
    import dataclasses

    def fail(problem: str) -> BadInput:
        return BadInput(f"{named} returned a Dataset whose {problem}")

    k = data.num_classes
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
        raise fail(f"num_classes={k!r} is not a positive integer")
    arrays = {}
    for field in ("x_train", "y_train", "x_test", "y_test"):
        value = getattr(data, field)
        try:
            arr = np.asarray(value)
        except ValueError as e:  # ragged lists
            raise fail(f"{field} is not an array ({e})") from None
        if arr.dtype == object or arr.ndim == 0:
            raise fail(f"{field} is not a numeric array (dtype {arr.dtype}, shape {arr.shape})")
        arrays[field] = arr
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise fail(f"x_{split} has {len(x):,} rows but y_{split} has {len(y):,}")
        if len(x) < 2:
            raise fail(f"{split} split has {len(x)} row(s)")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise fail(f"x_{split} holds NaN or Inf values")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # (N, 1) class ids, as keras.datasets.cifar10 gives them: a classifier's labels
        if np.issubdtype(y.dtype, np.floating):
            if not (np.isfinite(y).all() and (y == np.round(y)).all()):
                raise fail(f"y_{split} holds non-integer labels (class ids are integers)")
            y = y.astype(np.int64)
        elif not np.issubdtype(y.dtype, np.integer):
            raise fail(f"y_{split} is not integer class ids (dtype {y.dtype})")
        if y.size and (y.min() < 0 or y.max() >= int(k)):
            raise fail(f"y_{split} holds labels {int(y.min())}..{int(y.max())}, outside 0..{int(k) - 1} "
                       f"(num_classes={int(k)})")
        arrays[f"y_{split}"] = y
    for v in ("x", "y"):
        train, test = arrays[f"{v}_train"].shape[1:], arrays[f"{v}_test"].shape[1:]
        if train != test:
            raise fail(f"{v}_train rows have shape {train} but {v}_test rows {test}")
    return dataclasses.replace(data, num_classes=int(k), **arrays)


def mlp(data: datasets.Dataset, *, hidden: list[int] = (256, 256), activation: str = "relu") -> keras.Model:
    """Dense layers ``dense_1..dense_k`` and ``logits`` on flat inputs (N, features)."""
    layers: list[Any] = [keras.Input(data.x_train.shape[1:])]
    if len(data.x_train.shape) > 2:
        layers.append(keras.layers.Flatten(name="flatten"))
    layers += [keras.layers.Dense(int(w), activation=activation, name=f"dense_{i + 1}") for i, w in enumerate(hidden)]
    layers.append(keras.layers.Dense(data.num_classes, name="logits"))
    return keras.Sequential(layers, name="mlp")


def cnn(data: datasets.Dataset, *, filters: list[int] = (32, 64), kernel_size: int = 3,
        hidden: list[int] = (128,)) -> keras.Model:
    """``conv_i`` (kernel_size, relu, 2x2 max-pool) blocks, then ``dense_i`` and ``logits``.

    Flat square inputs (N, s*s) are reshaped to (s, s, 1).
    """
    shape = data.x_train.shape[1:]
    layers: list[Any] = [keras.Input(shape)]
    if len(shape) == 1:
        side = int(round(shape[0] ** 0.5))
        if side * side != shape[0]:
            raise ValueError(f"cnn needs square images, but inputs have {shape[0]} features")
        layers.append(keras.layers.Reshape((side, side, 1), name="image"))
    for i, f in enumerate(filters):
        layers += [keras.layers.Conv2D(int(f), kernel_size, padding="same", activation="relu", name=f"conv_{i + 1}"),
                   keras.layers.MaxPooling2D(2, name=f"pool_{i + 1}")]
    layers.append(keras.layers.Flatten(name="flatten"))
    layers += [keras.layers.Dense(int(w), activation="relu", name=f"dense_{i + 1}") for i, w in enumerate(hidden)]
    layers.append(keras.layers.Dense(data.num_classes, name="logits"))
    return keras.Sequential(layers, name="cnn")


def lstm_lm(data: datasets.Dataset, *, embedding: int = 200, units: int = 200) -> keras.Model:
    """Word LM: ``embedding`` -> ``lstm`` (returns sequences) -> ``softmax`` (Dense to the vocabulary).

    Inputs are token ids (N, T); targets are the next ids (N, T).
    """
    vocab = data.num_classes
    return keras.Sequential([keras.Input(data.x_train.shape[1:], dtype="int32"),
                             keras.layers.Embedding(vocab, int(embedding), name="embedding"),
                             keras.layers.LSTM(int(units), return_sequences=True, name="lstm"),
                             keras.layers.Dense(vocab, name="softmax")], name="lstm_lm")


def bert(data: datasets.Dataset, *, layers: int = 2, heads: int = 4, hidden: int = 64, intermediate: int = 128,
         dropout: float = 0.1) -> keras.Model:
    """A keras_hub ``BertBackbone`` built from its config (random weights, nothing downloaded) with a Dense
    ``head`` on its pooled output, for token sequences (N, T) with ids below the vocabulary (``data`` 's
    largest id + 1). Kernel paths: ``transformer_layer_<i>/self_attention_layer/{query,key,value,
    attention_output}``, ``transformer_layer_<i>/feedforward_{intermediate,output}_dense``, ``pooled_dense``,
    ``token_embedding``, ``head``. Needs ``pip install mutate[hub]``.
    """
    try:
        import keras_hub
    except ImportError:
        raise ValueError("the bert builder needs keras-hub: pip install 'mutate[hub]'") from None
    seq = int(data.x_train.shape[1])
    vocab = int(max(data.x_train.max(), data.x_test.max())) + 1
    backbone = keras_hub.models.BertBackbone(vocabulary_size=vocab, num_layers=int(layers), num_heads=int(heads),
                                             hidden_dim=int(hidden), intermediate_dim=int(intermediate),
                                             dropout=float(dropout), max_sequence_length=seq)
    tokens = keras.Input((seq,), dtype="int32", name="token_ids")
    pooled = backbone({"token_ids": tokens, "segment_ids": keras.ops.zeros_like(tokens),
                       "padding_mask": keras.ops.not_equal(tokens, 0)})["pooled_output"]
    return keras.Model(tokens, keras.layers.Dense(data.num_classes, name="head")(pooled), name="bert_classifier")


BUILTIN: dict[str, Callable[..., keras.Model]] = {"mlp": mlp, "cnn": cnn, "lstm_lm": lstm_lm, "bert": bert}


def _binds(fn: Callable[..., Any], kwargs: dict[str, Any]) -> bool:
    """Whether ``fn`` accepts these keywords (a TypeError from inside it is then about a value)."""
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError:
        return False
    except ValueError:  # no signature to read
        return True
    return True


def _mismatch(fn: Callable[..., Any], kwargs: dict[str, Any], section: str, given: tuple[str, ...] = ()) -> str:
    """What keeps ``fn(**kwargs)`` (plus the ``given`` keywords mutate passes) from binding: the keywords it
    does not take, else the parameters without a default that the section lacks ("does not take []" read
    as if a keyword were wrong when a required one was missing)."""
    try:
        params = inspect.signature(fn).parameters
    except ValueError:
        params = {}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    refused = [] if takes_any else [k for k in kwargs if k not in params
                                    or params[k].kind is inspect.Parameter.POSITIONAL_ONLY]
    missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs and n not in given
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing and not refused:
        return "needs " + ", ".join(f"{section}.{n}" for n in missing) + " (no default)"
    return f"does not take {sorted(refused or kwargs)}"


def _called(section: str, kwargs: dict[str, Any], user: bool) -> str:
    """`` (called with model.hidden=32)``: the values a built-in was given (a user's message is their own)."""
    if user or not kwargs:
        return ""
    return f" (called with {section}.{f', {section}.'.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def build_model(section: dict[str, Any], data: datasets.Dataset, where: str) -> keras.Model:
    """The model a space's ``model`` section names, built for ``data``.

    Raises:
        BadInput: an unknown keyword or a bad value, a user builder that raises or returns no Keras model.
    """
    name, kwargs = section["builder"], _kwargs(section, "builder")
    user = ":" in name
    fn = import_callable(name, "model.builder", where) if user else BUILTIN[name]
    try:
        model = fn(data=data, **kwargs)
    except Exception as e:  # noqa: BLE001 - a user builder may raise anything; report it on one line
        if isinstance(e, TypeError) and not _binds(fn, {"data": data, **kwargs}):
            if _binds(fn, kwargs):  # the builder has no `data` parameter: the keywords are fine
                raise BadInput(f"{where}: model.builder: {name} takes no `data` keyword; a builder is called as "
                               f"{name.rpartition(':')[2]}(data=Dataset, **the model section's other keys)") from None
            raise BadInput(f"{where}: model: {name} {_mismatch(fn, kwargs, 'model', ('data',))} ({e})") from None
        if not (user or isinstance(e, (ValueError, TypeError))):
            raise
        # a built-in builder's error is about the values given: name them (a user's message is their own)
        raise BadInput(f"{where}: model.builder: {name} raised {type(e).__name__}: {e}"
                       f"{_called('model', kwargs, user)}") from None
    if not isinstance(model, keras.Model):
        raise BadInput(f"{where}: model.builder: {name} returned {type(model).__name__}, not a keras.Model")
    return model
