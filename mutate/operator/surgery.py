"""`compress`, `strip`, `densify` and `compressible`: in place, on any Keras 3 model.

Kernels are addressed by the layer's path inside the model (``layer.path`` less the model's own name, e.g.
``block/mha/query`` in a subclassed model, ``fc1`` in a Sequential one), or by the layer's name; a
secondary kernel adds its slot (``lstm/recurrent_kernel``, ``sep/depthwise_kernel``). Plan keys and YAML
``layers`` may be globs over either. Keras sets ``layer.path`` where a layer is built, so a layer of a nested
Sequential (or a Bidirectional/TimeDistributed wrapper) is ``inner/h1`` when built in its model and ``h1``
once the model is reloaded from a file; every kernel therefore also answers to its **structural** address
(its ancestors' names down from the model, ``inner/h1``), which a reload keeps. The model and its layer
objects are kept: recompile after each call (the trainable variables change), as after Keras' own
``quantize``.
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Union

import keras

import operators
from mutate.errors import BadInput
from mutate.operator import host
from mutate.operator.model import mark_model, relative_layer_path
from mutate.operator.kinds import SUPPORTED, Kind, Slot, kind_of, view_of
from mutate.operator.state import KernelState
from mutate.operator.schedule import Schedule

PlanValue = Union[operators.Compressor, str, tuple[str, Mapping[str, Any]], list[Any]]


class PlanError(BadInput):
    """A plan or pattern that does not fit the model (a ValueError; exit 2 from the CLI)."""


@dataclass(frozen=True)
class Kernel:
    """A compressible kernel of a model.

    Attributes:
        path: its address (the layer's path in the model, plus ``/<slot>`` for a secondary kernel).
        layer: the layer holding it (an RNN layer for its cell's kernels).
        slot: which kernel of the layer.
        kind: the layer kind (``Dense``, ``EinsumDense``, ``Conv``, ``LSTM``...).
        shape: the kernel's shape.
        matrix: (m, n) of its matrix view.
        state: ``dense``, ``blending`` or ``spliced``.
    """

    path: str
    layer: keras.layers.Layer = field(repr=False)
    slot: Slot = field(repr=False)
    kind: Kind = field(repr=False)
    shape: tuple[int, ...]
    matrix: tuple[int, int]
    state: str
    structural: str = ""

    @property
    def params(self) -> int:
        return self.matrix[0] * self.matrix[1]

    @property
    def compression(self) -> KernelState | None:
        """Its blend (or spliced) state; None for a dense kernel."""
        found = getattr(self.layer, host.state_attr(self.slot), None)
        return found if isinstance(found, KernelState) else None

    @property
    def names(self) -> tuple[str, ...]:
        """Every string a pattern may match: the path, the layer's name (plus the slot when secondary), and the
        structural address (see the module's doc)."""
        primary = self.slot is self.kind.slots[0]
        own = self.layer.name if primary else f"{self.layer.name}/{self.slot.name}"
        return tuple(dict.fromkeys(n for n in (self.path, own, self.structural) if n))

    def __str__(self) -> str:
        m, n = self.matrix
        return f"{self.path} ({self.kind.name} {'x'.join(map(str, self.shape))} as {m}x{n}, {self.params:,} params)"


def walk(layer: keras.layers.Layer) -> Iterator[tuple[keras.layers.Layer, keras.layers.Layer | None]]:
    """(layer, parent) for every layer under ``layer`` (itself included, parent None), depth first, each once."""
    seen: set[int] = set()
    stack: list[tuple[Any, Any]] = [(layer, None)]
    while stack:
        current, parent = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current, parent
        children = list(getattr(current, "_layers", []))
        stack.extend((c, current) for c in reversed(children))


relative_path = relative_layer_path


def structural_paths(model: keras.layers.Layer) -> dict[int, str]:
    """``id(layer) -> "ancestor/.../name"`` for every layer under ``model`` (the model itself excluded): the
    address a reload keeps, where Keras' ``layer.path`` follows where the layer was built."""
    out: dict[int, str] = {}
    for layer, parent in walk(model):
        if layer is model:
            continue
        above = out.get(id(parent)) if parent is not None and parent is not model else None
        out[id(layer)] = f"{above}/{layer.name}" if above else layer.name
    return out


def rnn_cells(model: keras.layers.Layer) -> dict[int, keras.layers.Layer]:
    """``id(layer) -> the RNN layer`` for every layer inside an RNN layer's cell (a Dense in a custom cell of
    ``keras.layers.RNN``). Such a layer runs once per timestep inside the RNN's loop, where a blend would count
    timesteps as steps (and on JAX assign inside ``lax.scan``), so it is not compressible; LSTM, GRU and
    SimpleRNN compress their own kernels as layers of their own."""
    parents = {id(layer): parent for layer, parent in walk(model)}
    out: dict[int, keras.layers.Layer] = {}
    for layer, parent in walk(model):
        p = parent
        while p is not None:
            if isinstance(p, keras.layers.RNN):
                out[id(layer)] = p
                break
            p = parents.get(id(p))
    return out


def compressible(model: keras.Model) -> list[Kernel]:
    """Every compressible kernel of ``model`` (nested and subclassed models included), in layer order.

    Compressed kernels are listed too, with their state; an RNN's cell is reached through its RNN layer.
    """
    out = []
    structure = structural_paths(model)
    inside = rnn_cells(model)
    for layer, _ in walk(model):
        kind = kind_of(layer)
        if kind is None or layer is model or not layer.built or id(layer) in inside:
            continue
        if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
            continue
        path = relative_path(model, layer)
        for slot in kind.slots:
            state = getattr(layer, host.state_attr(slot), None)
            if isinstance(state, KernelState):
                view, status = state.view, "spliced" if state.spliced else "blending"
            elif slot.variable(layer) is not None:
                view, status = view_of(layer, slot), "dense"
            else:
                continue
            suffix = "" if slot is kind.slots[0] else f"/{slot.name}"
            out.append(Kernel(path + suffix, layer, slot, kind, view.shape, (view.m, view.n), status,
                              structure[id(layer)] + suffix))
    return out


def _as_compressor(value: PlanValue, key: str) -> operators.Compressor:
    if isinstance(value, (operators.Compressor, str)):
        return operators.get(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], Mapping):
        return operators.get(value[0], **dict(value[1]))
    if isinstance(value, list):  # a stack: stages applied in turn, e.g. [("pruning", {...}), ("kmeans", {...})]
        return operators.get("stack", stages=value)
    raise TypeError(f"plan[{key!r}] must be a Compressor, an operator name, (name, params) or a list of those (a "
                    f"stack), but got {value!r}.")


def match(kernels: list[Kernel], pattern: str) -> list[Kernel]:
    """The kernels whose path or name is ``pattern`` or matches it as a glob; a pattern that is a kernel's
    path names that kernel alone (``"proj"`` is not also ``block/proj``, a layer named proj), also when the
    path holds glob characters (a layer named ``fc[1]``)."""
    if exact := [k for k in kernels if k.path == pattern]:
        return exact
    return [k for k in kernels if any(n == pattern or fnmatch.fnmatchcase(n, pattern) for n in k.names)]


def no_match_message(model: keras.Model, pattern: str, kernels: list[Kernel]) -> str:
    return (f"{pattern!r} matches no compressible kernel of model {model.name!r}; compressible: "
            f"{', '.join(k.path for k in kernels) or 'none'} (kinds: {SUPPORTED})")


def resolve_plan(model: keras.Model, plan: Mapping[str, PlanValue]) -> list[tuple[Kernel, operators.Compressor]]:
    """Each kernel matched by a plan key (a path, a name or a glob) with its compressor.

    Raises:
        PlanError: a key matches no compressible kernel (the message lists them), or matches a layer that
            is not compressible, a kernel is matched twice or already compressed, or an operator does not fit
            a kernel's shape.
        TypeError: a plan value is malformed.
    """
    if not isinstance(plan, Mapping):
        raise TypeError("the compression plan must map layer paths or globs to operators, e.g. {'dense_1': "
                        f"('low_rank', {{'rank': 16}})}}, but got a {type(plan).__name__}: {plan!r:.200}")
    bad = [key for key in plan if not isinstance(key, str)]
    if bad:
        raise TypeError(f"plan key {bad[0]!r} must be a layer path, name or glob (a str); `mutate.compressible(model)` "
                        "lists the paths.")
    if not plan:
        raise PlanError("the compression plan is empty; map layer paths or globs to operators.")
    kernels = compressible(model)
    chosen: dict[str, tuple[Kernel, operators.Compressor]] = {}
    for key, value in plan.items():
        matched = match(kernels, key)
        if not matched:
            other = [relative_path(model, layer) for layer, _ in walk(model) if layer is not model
                     and any(fnmatch.fnmatchcase(n, key) for n in (relative_path(model, layer), layer.name))]
            if other:
                layer = next(la for la, _ in walk(model) if relative_path(model, la) == other[0])
                rnn = rnn_cells(model).get(id(layer))
                if rnn is not None and kind_of(layer):
                    raise PlanError(f"{other[0]!r} ({type(layer).__name__}) cannot be compressed: it is inside the "
                                    f"cell of RNN layer {rnn.name!r}, which calls it once per timestep (a blend "
                                    "counts batches); compress a layer outside the cell (LSTM, GRU and SimpleRNN "
                                    "layers compress their own kernels)")
                raise PlanError(f"{other[0]!r} ({type(layer).__name__}) cannot be compressed: mutate compresses "
                                f"{SUPPORTED}" + (" (quantized or LoRA layers are not)" if kind_of(layer) else ""))
            raise PlanError(no_match_message(model, key, kernels))
        op = _as_compressor(value, key)
        for k in matched:
            if k.path in chosen:
                raise PlanError(f"{k.path!r} is matched by more than one plan key (last: {key!r}).")
            if k.state != "dense":
                raise PlanError(f"{k.path!r} is already compressed ({k.state}); densify it first.")
            m, n = k.matrix
            try:
                op.check(m, n)
            except ValueError as e:
                raise PlanError(f"{k.path!r} ({m}x{n}), operator {op.name!r}: {e}") from None
            chosen[k.path] = (k, op)
    return list(chosen.values())


def _retrace(model: keras.Model) -> None:
    """Drop the model's traced train/test/predict functions (they captured the layers as they were), and
    rebuild a built optimizer for the variables the model has now (`_rebuild_optimizer`)."""
    for name in ("train_function", "test_function", "predict_function"):
        if getattr(model, name, None) is not None:
            setattr(model, name, None)
    _retrack_torch_params(model)
    _rebuild_optimizer(model)


def _retrack_torch_params(model: keras.Model) -> None:
    """On PyTorch, rebuild the ``torch.nn.ParameterDict`` each layer and model keeps of its variables (Keras
    fills it once, at build, from every variable below it): after `strip` a Sequential's ``parameters()`` and
    ``state_dict()`` still held the dropped kernel A (never freed) and lacked the packed arrays."""
    if keras.backend.backend() != "torch":
        return
    # torch's own walk: it also reaches a Sequential's inner Functional, which Keras' layer walk does not
    for layer in [m for m in model.modules() if isinstance(m, keras.layers.Layer)]:
        if hasattr(layer, "_torch_params"):
            layer._track_variables()


def optimizer_state(optimizer: Any) -> dict[str, Any]:
    """An optimizer's variables as NumPy arrays, keyed by their path without the optimizer's own name (Keras
    names instances ``adam``, ``adam_1``, ...): ``iteration``, ``learning_rate`` and one entry per slot, named
    after the variable it belongs to (e.g. ``sequential_dense_1_kernel_momentum``)."""
    return {k: keras.ops.convert_to_numpy(v) for k, v in zip(slot_keys(optimizer), optimizer.variables)}


def slot_keys(optimizer: Any) -> list[str]:
    """The keys `optimizer_state` gives an optimizer's variables, in the optimizer's order."""
    return [_slot_key(v) for v in optimizer.variables]


def set_optimizer_state(optimizer: Any, state: Mapping[str, Any], skip: tuple[str, ...] = ()) -> int:
    """Assign the entries of ``state`` (see `optimizer_state`) to a built optimizer's variables of the same
    key and shape, except the keys in ``skip``; returns how many were assigned (the others keep their value:
    zero for the slots of new variables)."""
    done = 0
    for v in optimizer.variables:
        key = _slot_key(v)
        value = state.get(key)
        if key not in skip and value is not None and tuple(value.shape) == tuple(v.shape):
            v.assign(value)
            done += 1
    return done


def _slot_key(variable: Any) -> str:
    path = str(getattr(variable, "path", variable.name))
    return path.split("/", 1)[1] if "/" in path else path


def _rebuild_optimizer(model: keras.Model) -> None:
    """A built optimizer holds state (moments, ...) for the trainable variables the model had; after surgery
    (A gone, factors added) saving it would write state that no longer matches, and Keras skips loading it
    with a warning. Replace it by the same optimizer (its config) built for the current trainable variables,
    carrying over the state of the variables that stayed (same key and shape) and its iteration count.
    An optimizer that cannot be rebuilt from its config is left as it is (recompiling replaces it anyway)."""
    opt = getattr(model, "optimizer", None)
    if opt is None or not getattr(opt, "built", False):
        return
    try:
        new = opt.__class__.from_config(opt.get_config())
    except Exception:  # noqa: BLE001 - a custom optimizer without a faithful config: keep it
        return
    with _variables_scope(model):
        new.build(model.trainable_variables)
    set_optimizer_state(new, optimizer_state(opt))
    model.optimizer = new


def _variables_scope(model: keras.Model) -> Any:
    """The distribution strategy's scope of ``model``'s variables when the caller is outside it (TensorFlow),
    so the rebuilt optimizer's variables are created where the model's live; else a no-op."""
    import contextlib

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if not tf.distribute.has_strategy():
            for v in model.weights:
                strategy = getattr(getattr(v, "value", None), "_distribute_strategy", None)
                if strategy is not None:
                    return strategy.scope()
    return contextlib.nullcontext()


def _check_model(model: Any, what: str) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"mutate.{what} expects a keras.Model, but got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"mutate.{what} needs a built model; build or call it first (model {model.name!r} is "
                         "not built).")
    _check_distribution_scope(model, what)


def _check_distribution_scope(model: keras.Model, what: str) -> None:
    """On TensorFlow, refuse (before changing anything) to create or drop variables of a model built under a
    `tf.distribute` strategy from outside that strategy's scope: `compress` made plain variables beside the
    mirrored ones and `fit` failed later on "colocate_vars_with"; `strip` and `densify` failed half-way."""
    if keras.backend.backend() != "tensorflow" or "tensorflow" not in sys.modules:
        return
    import tensorflow as tf

    built = next((getattr(v.value, "_distribute_strategy", None) for v in model.weights), None)
    if built is None or built is tf.distribute.get_strategy():
        return
    raise ValueError(f"mutate.{what}: model {model.name!r} was built under a tf.distribute "
                     f"{type(built).__name__}; call mutate.{what} inside its scope (`with strategy.scope(): "
                     f"mutate.{what}(...)`), which is where its variables must be created and dropped.")


def compress(model: keras.Model, plan: Mapping[str, PlanValue], schedule: Schedule, *, refresh: bool = False,
             trainable_factors: Mapping[str, bool] | None = None) -> keras.Model:
    """Compress the planned kernels of ``model`` in place; returns ``model``.

    Each kernel blends from A to its operator's factors on its own copy of ``schedule``. Works mid-training;
    recompile, then fit with `CompressionCallback`.

    Args:
        model: a built Keras model (Sequential, Functional or subclassed).
        plan: path, name or glob -> a Compressor, an operator name, ``(name, params)``, or a list of those: a
            stack, each stage compressing the factors of the one before (see `operators.stack`).
        schedule: the blend schedule.
        refresh: recompute factors from A at every update while alpha > 0.
        trainable_factors: per-factor trainability overrides, e.g. ``{"right": False}``.

    Raises:
        PlanError, TypeError: see `resolve_plan`; ValueError: an unbuilt model.
    """
    _check_model(model, "compress")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"`schedule` must be a mutate.Schedule, but got {schedule!r}.")
    resolved = resolve_plan(model, plan)
    attached: list[Kernel] = []
    try:
        for k, op in resolved:
            host.attach(k.layer, k.slot, {"operator": op.name, "params": op.get_config(),
                                          "schedule": schedule.get_config(), "refresh": bool(refresh),
                                          "trainable_factors": dict(trainable_factors or {}), "spliced": False})
            attached.append(k)
    except BaseException:  # e.g. trainable_factors naming a factor one operator lacks: nothing is changed
        for k in reversed(attached):
            host.detach(k.layer, k.slot)
        raise
    mark_model(model, True)
    _retrace(model)
    return model


def kernel(model: keras.Model, path: str) -> Kernel:
    """The compressible kernel at ``path`` (or matched by a glob/name, when exactly one is).

    Raises:
        PlanError: none or several match.
    """
    kernels = compressible(model)
    found = [k for k in kernels if k.path == path] or match(kernels, path)
    if len(found) != 1:
        raise PlanError(no_match_message(model, path, kernels) if not found else
                        f"{path!r} matches {len(found)} kernels: {', '.join(k.path for k in found)}")
    return found[0]


def blending(model: keras.Model) -> list[Kernel]:
    return [k for k in compressible(model) if k.state == "blending"]


def splice_finished(model: keras.Model) -> list[str]:
    """Splice every kernel whose alpha reached 0; returns their paths (recompile when not empty)."""
    done = [k.path for k in blending(model) if k.compression.finished()]
    if done:
        strip(model, finished_only=True)
    return done


def strip(model: keras.Model, *, force: bool = False, finished_only: bool = False) -> keras.Model:
    """Splice every blending kernel whose alpha reached 0, in place: A is gone and only the operator's packed
    arrays stay (a Dense then computes ``x @ B∘C`` through the operator's matmul, e.g. two matmuls for
    low-rank). Predictions equal the blended model's at alpha = 0. Returns ``model``; recompile to train on.

    Args:
        force: splice kernels still blending too, from their current factors (predictions then change).
        finished_only: leave kernels still blending as they are instead of raising.

    Raises:
        ValueError: a kernel is still blending and neither ``force`` nor ``finished_only`` is set.
    """
    _check_model(model, "strip")
    chosen = []
    for k in blending(model):
        state = getattr(k.layer, host.state_attr(k.slot))
        if not state.finished() and not force:
            if finished_only:
                continue
            seen, last = state.current_step(), state.schedule.final_step
            more = max(1, last + 1 - seen)  # the update due at step s runs in the batch that step counts
            raise ValueError(
                f"{k.path!r} is still blending (alpha={state.current_alpha():.4g} after {seen} training batches; "
                f"its last update, at step {last}, sets alpha=0: {more} more batch{'es' if more > 1 else ''}): "
                "train on with CompressionCallback, or pass force=True to splice its current factors anyway.")
        chosen.append((k, state))
    for k, state in chosen:
        if not state.is_factored():
            state.refactor(state.view.to_matrix(keras.ops.convert_to_numpy(k.slot.variable(k.layer))))
        host.splice(k.layer, k.slot)
    _retrace(model)
    return model


def densify(model: keras.Model, pattern: str) -> keras.Model:
    """Make the compressed kernels matched by ``pattern`` plain again, in place, each holding the matrix it
    computes with now. Returns ``model``.

    Raises:
        PlanError: nothing compressed matches ``pattern``.
    """
    _check_model(model, "densify")
    found = [k for k in match(compressible(model), pattern) if k.state != "dense"]
    if not found:
        raise PlanError(f"model {model.name!r} has no compressed kernel matching {pattern!r}.")
    for k in found:
        host.detach(k.layer, k.slot)
    mark_model(model, any(k.state != "dense" for k in compressible(model)))
    _retrace(model)
    return model
