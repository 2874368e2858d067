"""What ``mutate search`` does before and after Ray: check the space against the real model, then summarise.

Building the model once in the driver lets every shape error (a rank above min(m, n), a glob matching
nothing, an unreachable budget) surface in a second, before any trial starts.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import keras
import numpy as np

import operators
from mutate.errors import BadInput
from mutate.search import builders, policy
from mutate.operator.size import model_size
from mutate.search.space import Space
from mutate.operator.surgery import Kernel, compressible, match, relative_path, walk
from mutate.operator.kinds import SUPPORTED
from mutate.search.table import Entry, Table, saved_bytes
from mutate.search.trial import budget_bytes, nonfinite_weights


def _glob_matches(space: Space, key: str, globs: list[str], model: keras.Model, kernels: list[Kernel]) -> None:
    """Every glob must match a compressible kernel: one that matches only other layers names them."""
    import fnmatch

    for g in globs:
        if match(kernels, g):
            continue
        other = [(relative_path(model, la), type(la).__name__) for la, _ in walk(model) if la is not model
                 and any(fnmatch.fnmatchcase(n, g) for n in (relative_path(model, la), la.name))]
        if other:
            layer = next(la for la, _ in walk(model) if la is not model and relative_path(model, la) == other[0][0])
            if not layer.built:  # a layer the model holds but never calls has no kernel to factor
                raise space.error(key, f"{g!r} matches {other[0][0]!r}, a {other[0][1]} the model never calls (it "
                                       "was not built, so it holds no kernel)")
            raise space.error(key, f"{g!r} matches {other[0][0]!r}, a {other[0][1]} that cannot be compressed "
                                   f"(mutate compresses {SUPPORTED})")
        raise space.error(key, f"{g!r} matches no compressible kernel; the model's are "
                               f"{', '.join(k.path for k in kernels)}")


def _level_entries(space: Space, op_name: str, layer_name: str, m: int, n: int,
                   kernel_bits: int = 32) -> list[Entry]:
    """One sizes-only table entry per combination of ``op_name``'s choices on an m x n layer.

    Raises:
        SpaceError: a combination of choices (each fine on its own) cannot be laid out for the layer.
    """
    out = []
    for params in policy.levels(space.mutations["operators"], op_name):
        try:
            saved = saved_bytes(operators.get(op_name, **params), m, n, kernel_bits)
        except (ValueError, TypeError) as e:
            raise space.error(f"mutations.operators.{op_name}",
                              f"{params} does not fit layer {layer_name!r} ({m}x{n}): {e}") from None
        out.append(Entry(layer_name, op_name, params, saved))
    return out


class Prepared(NamedTuple):
    """What `prepare` found: the kernel paths the search may mutate (with their operators), the budget and
    dense size in bytes, the model's output width (a language model's vocabulary), the sizes-only sensitivity
    table (`mutate.search.table`), and a one-line description of every compressible kernel of the model."""

    allowed: dict[str, list[str]]
    budget: int
    dense_bytes: int
    classes: int
    sizes: Table
    kernels: list[str]


KERAS_OWN = ("keras", "tf_keras", "tensorflow")
"""Packages of Keras' own classes (known to Keras by name, and round-tripping through ``.keras`` files)."""
KERAS_FAMILY = ("keras_hub", "keras_cv", "keras_nlp")
"""Packages whose layers round-trip through ``.keras`` files as Keras' own do (their models can be large:
saving one to check it would cost seconds and disk)."""


def _check_loadable_and_logits(space: Space, model: keras.Model, data: Any) -> None:
    """Refuse, before any trial, a model whose checkpoints could not be loaded back (a user's class Keras
    does not know by name: PBT's exploits, the test set and `export` load them; the search once ran to its end
    and then failed), a model that outputs probabilities (trials train on logits: a softmax output would
    be trained and scored on the wrong loss, silently), and outputs that are not one logit per class for each
    label (one-hot labels, or a head narrower or wider than ``num_classes``: every trial failed inside Keras'
    loss, and the search stopped with an internal error)."""
    builder = space.model["builder"]
    for layer, _ in walk(model):
        cls = type(layer)
        if cls.__module__.split(".")[0] in KERAS_OWN:
            continue
        if keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is not cls:
            raise space.error("model.builder", f"{builder} built a model holding {cls.__module__}.{cls.__qualname__}, "
                                               "which is not registered with Keras, so its checkpoints could not "
                                               "be loaded (exploits, the test set, export): decorate the class with "
                                               "@keras.saving.register_keras_serializable()")
    x, y = data.x_train[:8], np.asarray(data.y_train[:8])
    out = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
    if any(type(la).__module__.split(".")[0] not in (*KERAS_OWN, *KERAS_FAMILY)
           or isinstance(la, keras.layers.Lambda) for la, _ in walk(model)):  # a user's class, or a Lambda
        _check_round_trip(space, model, x, out)
    want = (len(y), *y.shape[1:], data.num_classes)
    if out.shape != want:
        hint = (" (the labels look one-hot: give class ids, np.argmax(y, axis=-1))"
                if y.ndim >= 2 and y.shape[-1] == data.num_classes and out.shape == y.shape else "")
        raise space.error("model.builder", f"{builder} built a model whose output for {len(y)} rows has shape "
                                           f"{out.shape}; labels of shape {y.shape} with num_classes="
                                           f"{data.num_classes} need {want}: one logit per class and "
                                           f"label{hint}")
    if out.ndim >= 2 and out.shape[-1] > 1 and np.all(out >= 0) and np.allclose(out.sum(-1), 1.0, atol=1e-4):
        raise space.error("model.builder", f"{builder} built a model whose outputs are probabilities (each row "
                                           "sums to 1: a softmax); mutate trains and scores logits "
                                           "(from_logits=True): end the model without the softmax")


def _check_round_trip(space: Space, model: keras.Model, x: Any, out: np.ndarray) -> None:
    """Save ``model`` to a ``.keras`` file and load it back as a trial's restore does: a user's class whose
    ``get_config`` misses a constructor argument, or a ``Lambda`` (Keras' safe mode refuses to load its code),
    once failed in the first exploit or at the test set, after the search had run (an internal error); a
    ``get_config`` that drops a setting loaded a different model, silently. Only models holding a class of
    the user's or a Lambda are checked (Keras' own layers and `KERAS_FAMILY`'s round-trip)."""
    import tempfile
    from pathlib import Path

    builder = space.model["builder"]
    with tempfile.TemporaryDirectory(prefix="mutate-roundtrip-") as d:
        try:
            model.save(Path(d) / "m.keras")
            copy = keras.saving.load_model(Path(d) / "m.keras", compile=False)
            held = len(copy.weights)
            again = keras.ops.convert_to_numpy(copy(x, training=False)).astype(np.float64)
        except Exception as e:  # noqa: BLE001 - whatever the user's class raises, said in one line
            first = next((line for line in str(e).splitlines() if line.strip()), "")[:300]
            raise space.error("model.builder", f"{builder} built a model that Keras cannot load back from a "
                                               f".keras file, as every exploit and the test set do "
                                               f"({type(e).__name__}: {first}); give each class of yours a "
                                               "get_config returning its constructor's arguments, and no "
                                               "Lambda layers") from None
    if held != len(model.weights):  # Keras warns and goes on when build_from_config fails
        raise space.error("model.builder", f"{builder} built a model that loads back from a .keras file with {held} "
                                           f"of its {len(model.weights)} weights: Keras builds a loaded "
                                           "subclassed model by calling it on float32 placeholders of its first "
                                           "input shape, and this one's call failed there (NumPy on a tensor, a "
                                           "Python branch on its values, integer ops on token ids): give its class a "
                                           "build(input_shape) that creates its weights")
    def close(a: np.ndarray) -> bool:
        return a.shape == out.shape and bool(np.allclose(a, out, rtol=1e-4, atol=1e-4 * (1 + np.abs(out).max())))

    repeat = keras.ops.convert_to_numpy(model(x, training=False)).astype(np.float64)
    if close(repeat) and not close(again):  # a model random at inference (noise in call) cannot be compared
        raise space.error("model.builder", f"{builder} built a model that loads back from a .keras file "
                                           "computing other outputs (largest difference "
                                           f"{float(np.abs(again - out).max()) if again.shape == out.shape else 'in shape'}"
                                           "): a get_config of yours leaves out a setting its constructor takes")


def prepare(space: Space) -> Prepared:
    """Validate the space against its model.

    Raises:
        SpaceError: a glob matches nothing, a layer cannot be compressed, a parameter does not fit a layer,
            a mutable layer holds a NaN or Inf weight, or the budget is below the smallest model the space
            can reach.
    """
    if space.budget.get("unit") == "litert" and keras.backend.backend() != "tensorflow":
        raise space.error("budget.unit", f"'litert' measures LiteRT files, which Keras exports on the tensorflow "
                                         f"backend only (this run: {keras.backend.backend()!r}); use unit: stored")
    dtypes, default = keras.config.dtype_policy().name, keras.config.floatx()
    if dtypes != default:  # Keras keeps a policy per thread: the trials and the table would not see it
        raise BadInput(f"{space.where}: keras.config.dtype_policy() is {dtypes!r} in this thread, but the search's "
                       f"trials (other processes) and its sensitivity table (another thread) build their models "
                       f"with Keras' default {default!r}: call keras.config.set_dtype_policy({default!r}) before "
                       "the search")
    builders.importable_beside(space)  # a user's models.py next to the YAML (trials inherit it: PYTHONPATH)
    data = builders.load_data(space.data, space.where)
    rows = len(data.x_train)
    if space.training["batch_size"] > rows:  # a trial stacks steps x batch indices: a huge batch ate the memory
        raise space.error("training.batch_size", f"expected at most the {rows:,} training rows of data.name "
                                                 f"{space.data['name']}, got {space.training['batch_size']}")
    keras.utils.set_random_seed(space.search["seed"])
    model = builders.build_model(space.model, data, space.where)
    _check_loadable_and_logits(space, model, data)
    kernels = compressible(model)
    paths = [k.path for k in kernels]
    twice = next((p for p in paths if paths.count(p) > 1), None)
    if twice is not None:  # a subclassed model may give two sublayers one name; a trial could not tell them apart
        raise space.error("model.builder", f"{space.model['builder']} built a model with two compressible kernels "
                                           f"at {twice!r} (two layers of one name): name them apart")
    by_path = {k.path: k for k in kernels}
    names = {k.path: k.names for k in kernels}
    mut = space.mutations
    _glob_matches(space, "mutations.layers", mut["layers"], model, kernels)
    for op, params in mut["operators"].items():
        _glob_matches(space, f"mutations.operators.{op}.layers", params.get("layers", []), model, kernels)
    allowed = policy.targets(mut["operators"], mut["layers"], names)
    if not allowed:
        raise space.error("mutations.layers", f"no layer is left to mutate after the per-operator `layers`: {names}")
    for op, params in mut["operators"].items():
        if not any(op in ops for ops in allowed.values()):
            raise space.error(f"mutations.operators.{op}.layers",
                              f"{params.get('layers')} leaves {op} no layer that mutations.layers "
                              f"{mut['layers']} makes mutable (mutable: {', '.join(allowed)})")
    bad = nonfinite_weights(model, list(allowed))
    if bad:  # every operator refuses to factor such a matrix: say so now, not in every trial
        raise space.error("model.builder", f"{space.model['builder']} built a model whose mutable {bad}; "
                                           "the operators cannot factor it")
    size = model_size(model)
    dense_bytes = size.dense_bits // 8
    best_saved: list[int] = []  # per mutable layer: the most bytes one mutation there saves
    entries: list[Entry] = []
    for layer_name, ops in allowed.items():
        m, n = by_path[layer_name].matrix
        for op in ops:
            choices = policy.choices(mut["operators"], op)
            for p, values in choices.items():
                for v in values:
                    try:
                        operators.get(op, **{**{q: vs[0] for q, vs in choices.items()}, p: v}).check(m, n)
                    except (ValueError, TypeError) as e:
                        # the message names the parameter at fault, which may be another one held at its
                        # first value (k=16 is fine; block_size=7 is not)
                        named = [q for q in choices if re.search(rf"\b{q}=", str(e))]
                        q = p if p in named or not named else named[0]
                        bad = v if q == p else choices[q][0]
                        raise space.error(f"mutations.operators.{op}.{q}",
                                          f"{bad!r} does not fit layer {layer_name!r} ({m}x{n}): {e}") from None
        bits = operators.dtype_bits(by_path[layer_name].layer.dtype_policy.variable_dtype)
        levels = [e for op in allowed[layer_name] for e in _level_entries(space, op, layer_name, m, n, bits)]
        entries += levels
        best_saved.append(max(0, max(e.saved for e in levels)))
    budget = budget_bytes(space, dense_bytes)
    cap = space.mutations["max_mutations"]  # a genome mutates at most this many layers
    floor = dense_bytes - sum(sorted(best_saved, reverse=True)[:cap])
    if budget < floor:
        key = "budget.bytes" if space.budget["bytes"] is not None else "budget.ratio"
        value = space.budget["bytes"] if space.budget["bytes"] is not None else space.budget["ratio"]
        within = f" with at most mutations.max_mutations={cap} mutated layers" if cap < len(best_saved) else ""
        raise space.error(key, f"{value!r} ({budget:,} bytes) is below the smallest model this space can reach"
                               f"{within} ({floor:,} bytes of {dense_bytes:,} dense)")
    return Prepared(allowed, budget, dense_bytes, int(data.num_classes), Table(entries, dense_bytes=dense_bytes),
                    [str(k) for k in kernels])

