"""In-place compression of a Keras layer: the layer object stays, its class becomes a same-named subclass.

`attach` gives a built layer a `KernelState` per compressed kernel (attribute ``mutate_<slot>``) and swaps its
class for ``compressed_class(type(layer))``: a subclass with the same name, whose ``call`` computes with the
blended (or spliced) kernel and then runs the user's own ``call``, so the layer's config, regularizers,
constraints, dtype policy (mixed precision included) and its place in a Sequential, Functional or
subclassed model are kept. `detach` undoes it. Saved ``.keras`` files carry the states; they load after
``import mutate`` (every such class deserializes through the registered name ``mutate>Compressed``).

A kernel is swapped in only for the duration of the call: the holder's attribute (a Dense's ``_kernel``, an
LSTM cell's ``kernel``) points at the computed tensor, then back at the variable A (or None once spliced).
A Dense and an Embedding skip that: their call is rewritten on the factors, so a spliced low-rank Dense is
two matmuls and a blending one costs ``x @ A`` plus the operator's own ``matmul``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from typing import Any

import keras
from keras import ops

from mutate.operator.anchor import anchor
from mutate.operator.kinds import Kind, Slot, View, kind_of
from mutate.operator.state import KernelState

REGISTERED = "mutate>Compressed"
_CLASSES: dict[type, type] = {}


def state_attr(slot: Slot) -> str:
    return f"mutate_{slot.name}"


def states(layer: keras.layers.Layer) -> list[tuple[Slot, KernelState]]:
    """(slot, state) of every compressed kernel of ``layer`` (empty for a plain layer)."""
    kind = kind_of(layer)
    if kind is None:
        return []
    return [(s, getattr(layer, state_attr(s))) for s in kind.slots
            if isinstance(getattr(layer, state_attr(s), None), KernelState)]


def _outer_training() -> Any:
    """The ``training`` of the call this one is nested in (None when no caller set one), read without
    opening a call context (Keras' `_get_call_context` would make this call the context's entry)."""
    from keras.src.backend.common import global_state

    from mutate.operator.state import PHASE

    context = global_state.get_global_attribute("current_call_ctx")
    if context is None:
        return None
    if PHASE.value is not None and not getattr(context.entry_layer, "_call_has_training_arg", True):
        # Keras' step called a model whose call takes no `training` without one: a value in the shared context
        # is an earlier layer's signature default (Dropout's, an RNN's training=False, stashed "for downstream
        # layers"), not the caller's word; the step's phase decides (it hid every later layer from the schedule)
        return None
    return context.training


class _Untold(threading.local):
    """Per thread (tf.distribute traces replicas in threads): ids of the compressed layers in a call that
    nobody gave a ``training`` (`Compressed.__call__`)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()


_UNTOLD = _Untold()


def _training(layer: keras.layers.Layer, kwargs: dict[str, Any]) -> Any:
    if id(layer) in _UNTOLD.ids:
        # nobody said: Keras filled `training` from the call's default (an RNN's training=False), which
        # would hide a model whose call takes no `training` from the callback's phase (`KernelState.begin_call`)
        return None
    training = kwargs.get("training")
    if training is None:
        context = layer._get_call_context() if hasattr(layer, "_get_call_context") else None
        training = getattr(context, "training", None)
    return training


def _value(var: Any) -> Any:
    return var.value if hasattr(var, "value") else var


class Compressed:
    """Mixin of every compressed layer class (see the module docstring)."""

    _mutate_base: type = object
    _mutate_kind: Kind

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("training") is not None or _outer_training() is not None:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        ids, me = _UNTOLD.ids, id(self)
        nested = me in ids
        ids.add(me)
        try:
            return super().__call__(*args, **kwargs)  # type: ignore[misc]
        finally:
            if not nested:
                ids.discard(me)

    def _mutate_call(self, base_call: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        pairs = states(self)
        training = _training(self, kwargs)
        kind = self._mutate_kind
        if kind.fast and len(pairs) == 1:
            from mutate.operator.fast import fast_call

            out = fast_call(kind.fast, base_call, self, pairs[0], args[0], training)
            if out is not None:
                return out
        swapped = []
        try:
            for slot, state in pairs:
                holder = slot.holder(self)
                var = getattr(holder, slot.attr)
                dtype = self.compute_dtype if var is None else None
                kernel = state.kernel(None if var is None else _value(var), training, dtype, anchor(args))
                swapped.append((holder, slot.attr, var))
                object.__setattr__(holder, slot.attr, kernel)
            return base_call(self, *args, **kwargs)
        finally:
            for holder, attr, var in reversed(swapped):
                object.__setattr__(holder, attr, var)

    def enable_lora(self, *args: Any, **kwargs: Any) -> None:
        """Refused: Keras' LoRA adds to the kernel this layer no longer computes with (its calls read the
        blend or the spliced factors), so the adapters would do nothing. Densify the layer first."""
        slots = ", ".join(slot.name for slot, _ in states(self))
        raise ValueError(f"layer {self.name!r} is compressed by mutate ({slots}); LoRA would not reach its "
                         "compressed kernel: `mutate.densify(model, path)` first.")

    # -- saving -----------------------------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]
        base = self._mutate_base
        config["mutate"] = {"base": {"module": base.__module__, "class_name": base.__qualname__,
                                     "registered_name": keras.saving.get_registered_name(base)},
                            "states": {s.name: st.spec() for s, st in states(self)}}
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        config = dict(config)
        spec = config.pop("mutate")
        if cls is Compressed:  # the registered entry point: find the user's class, then its compressed class
            return compressed_class(_resolve(spec["base"])).from_config({**config, "mutate": spec})
        layer = super().from_config(config)  # type: ignore[misc]
        object.__setattr__(layer, "_mutate_pending", spec["states"])  # untracked: Keras would track the dict
        return layer

    def _mutate_restore(self) -> None:
        """After the user's build: recreate the saved states (and drop A where they were spliced)."""
        pending = self.__dict__.pop("_mutate_pending", None)
        if not pending:
            return
        for name, spec in pending.items():
            attach(self, self._mutate_kind.slot(name), spec, swap_class=False, scoped=False)  # in build's scope

    def save_own_variables(self, store: Any) -> None:
        for i, v in enumerate(self._trainable_variables + self._non_trainable_variables):
            store[str(i)] = v

    def load_own_variables(self, store: Any) -> None:
        own = self._trainable_variables + self._non_trainable_variables
        if len(store.keys()) != len(own):
            raise ValueError(f"layer {self.name!r} expected {len(own)} variables, but the file holds "
                             f"{len(store.keys())}.")
        for i, v in enumerate(own):
            v.assign(store[str(i)])


def _resolve(base: dict[str, Any]) -> type:
    """The user's class a saved compressed layer or model names: a registered Keras serializable, or a class of
    Keras' own packages (as Keras itself allows, so a file cannot make ``load_model`` import arbitrary modules).

    Raises:
        ValueError: the class is neither.
    """
    found = keras.saving.get_registered_object(base["registered_name"])
    if found is not None:
        return found
    if base["module"].split(".")[0] not in ("keras", "keras_hub", "keras_cv", "keras_nlp"):
        raise ValueError(f"the file names class {base['class_name']!r} of module {base['module']!r}, which is not "
                         "registered with Keras: decorate it with @keras.saving.register_keras_serializable() and "
                         "import it before loading")
    obj: Any = importlib.import_module(base["module"])
    for part in base["class_name"].split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type) or not issubclass(obj, keras.layers.Layer):
        raise ValueError(f"{base['module']}.{base['class_name']} is not a Keras layer class")
    return obj


def compressed_class(base: type) -> type:
    """The compressed subclass of ``base`` (made once; same ``__name__``; serialized as ``mutate>Compressed``)."""
    if base in _CLASSES:
        return _CLASSES[base]
    if issubclass(base, Compressed):
        return base
    kind = kind_of_class(base)
    base_call, base_build = base.call, base.build

    @functools.wraps(base_call)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self._mutate_call(base_call, args, kwargs)

    @functools.wraps(base_build)
    def build(self: Any, *args: Any, **kwargs: Any) -> None:
        base_build(self, *args, **kwargs)
        self._mutate_restore()

    cls = type(base.__name__, (Compressed, base), {
        "call": call, "build": build, "_mutate_base": base, "_mutate_kind": kind,
        "__module__": __name__, "__qualname__": base.__qualname__,
        "__doc__": f"{base.__name__} compressed in place by mutate (see mutate.operator.host)."})
    _register(cls)
    _CLASSES[base] = cls
    return cls


def kind_of_class(base: type) -> Kind:
    from mutate.operator.kinds import kinds

    for kind in kinds():
        if issubclass(base, kind.classes):
            return kind
    raise TypeError(f"{base.__name__} is not a compressible layer class")


def _register(cls: type) -> None:
    """Every compressed class serializes under one registered name, resolved by `Compressed.from_config`."""
    keras.saving.get_custom_objects()[REGISTERED] = Compressed
    from keras.src.saving import object_registration  # the name map of register_keras_serializable

    object_registration.GLOBAL_CUSTOM_NAMES[cls] = REGISTERED


def register() -> None:
    """Make ``mutate>Compressed`` and ``mutate>CompressedModel`` loadable (called when Keras is imported)."""
    from mutate.operator.model import MODEL_REGISTERED, CompressedModel

    keras.saving.get_custom_objects()[REGISTERED] = Compressed
    keras.saving.get_custom_objects()[MODEL_REGISTERED] = CompressedModel


# -- attach / detach ------------------------------------------------------------------------------------------
def _drop(holder: keras.layers.Layer, slot: Slot, state: KernelState) -> None:
    """Untrack A from its holder (remembering how to recreate it) and point the attribute at None."""
    var = getattr(holder, slot.attr)
    if var is None:
        return
    if "_mutate_order" not in holder.__dict__:  # the plain layer's variable order, restored by `_recreate`
        object.__setattr__(holder, "_mutate_order", [v.name for v in holder._trainable_variables] +
                           [v.name for v in holder._non_trainable_variables])
    state._a_meta = {"name": var.name, "dtype": var.dtype, "trainable": var.trainable,
                     "regularizer": getattr(var, "regularizer", None), "constraint": getattr(var, "constraint", None)}
    holder._untrack_variable(var)
    object.__setattr__(holder, slot.attr, None)


def _recreate(holder: keras.layers.Layer, slot: Slot, state: KernelState) -> Any:
    """Give the holder a kernel variable again, in the plain layer's variable order (which its saving uses)."""
    meta = state._a_meta
    holder._tracker.unlock()
    try:
        scope = holder._open_name_scope() if hasattr(holder, "_open_name_scope") else keras.name_scope(holder.name)
        with scope:
            var = holder.add_weight(name=meta["name"], shape=state.view.shape, dtype=meta["dtype"],
                                    initializer="zeros", trainable=meta["trainable"],
                                    regularizer=meta["regularizer"], constraint=meta["constraint"])
    finally:
        holder._tracker.lock()
    order = holder.__dict__.get("_mutate_order", [])
    for own in (holder._trainable_variables, holder._non_trainable_variables):
        own.sort(key=lambda v: order.index(v.name) if v.name in order else len(order))
    object.__setattr__(holder, slot.attr, var)
    return var


def attach(layer: keras.layers.Layer, slot: Slot, spec: dict[str, Any], *, swap_class: bool = True,
           packed: dict[str, Any] | None = None, scoped: bool = True) -> KernelState:
    """Compress ``slot`` of the built ``layer`` in place with ``spec`` (see `KernelState`); a spliced spec
    drops A and takes ``packed`` arrays (None: left for a load to fill)."""
    holder = slot.holder(layer)
    var = getattr(holder, slot.attr)
    old = getattr(layer, state_attr(slot), None)
    view: View = old.view if isinstance(old, KernelState) else slot.view(layer, tuple(int(d) for d in var.shape))
    with contextlib.ExitStack() as scopes:  # its variables' paths: <layer path>/mutate_<slot>/...
        for part in (layer.path or layer.name).split("/") if scoped else ():
            scopes.enter_context(keras.name_scope(part))
        state = KernelState(spec, view, host=layer.name, name=state_attr(slot), dtype=layer.dtype_policy)
    if not (layer.trainable and holder.trainable):
        # Keras hands `trainable=False` to the sublayers a layer has when it is set: a frozen layer's
        # factors stay frozen (and `layer.trainable = True` later reaches them like any sublayer)
        state.trainable = False
    if isinstance(old, KernelState):
        state._a_meta = getattr(old, "_a_meta", None)
        _remove_state(layer, slot)
    layer._tracker.unlock()
    try:
        setattr(layer, state_attr(slot), state)
    finally:
        layer._tracker.lock()
    if state.spliced:
        _drop(holder, slot, state)
        if packed is not None:
            state.assign_packed(packed)
    if swap_class and not isinstance(layer, Compressed):
        layer.__class__ = compressed_class(type(layer))
    return state


def _remove_state(layer: keras.layers.Layer, slot: Slot) -> None:
    state = getattr(layer, state_attr(slot), None)  # (on PyTorch a sublayer lives in the module's _modules)
    if state is None:
        return
    layer._tracker.unlock()
    try:
        layer._tracker.untrack(state)
    finally:
        layer._tracker.lock()
    delattr(layer, state_attr(slot))


def splice(layer: keras.layers.Layer, slot: Slot) -> KernelState:
    """Replace a finished (or forced) blend by its packed factors; A is dropped."""
    state = getattr(layer, state_attr(slot))
    packed = state.compressor.pack(state.factor_values())
    return attach(layer, slot, {**state.spec(), "spliced": True}, packed=packed)


def current_matrix(layer: keras.layers.Layer, slot: Slot) -> Any:
    """The (m, n) matrix the slot computes with now (NumPy)."""
    state = getattr(layer, state_attr(slot))
    if state.spliced:
        return state.product_matrix()
    a = state.view.to_matrix(ops.convert_to_numpy(slot.variable(layer)))
    if not state.is_factored():
        return a
    alpha = state.current_alpha()
    return alpha * a + (1.0 - alpha) * state.product_matrix()


def detach(layer: keras.layers.Layer, slot: Slot) -> None:
    """Make ``slot`` a plain kernel again, holding the matrix it computes with now; the layer's class returns
    to the user's once no kernel of it is compressed."""
    state = getattr(layer, state_attr(slot))
    matrix = current_matrix(layer, slot)
    holder = slot.holder(layer)
    var = getattr(holder, slot.attr)
    if var is None:
        var = _recreate(holder, slot, state)
    var.assign(ops.convert_to_numpy(state.view.from_matrix(matrix)).astype(var.dtype))
    _remove_state(layer, slot)
    if not states(layer) and isinstance(layer, Compressed):
        layer.__class__ = layer._mutate_base


register()  # importing this module makes compressed models loadable
