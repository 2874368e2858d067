"""The compressed model: restores the states of layers that its config does not rebuild."""

from __future__ import annotations

import json
from typing import Any

import keras
import numpy as np

from mutate.operator.host import _resolve, attach, detach, state_attr
from mutate.operator.kinds import kind_of
from mutate.operator.state import KernelState

MODEL_REGISTERED = "mutate>CompressedModel"
_MODEL_CLASSES: dict[type, type] = {}


class CompressedModel:
    """Mixin of a compressed model's class. Layers that a model's config rebuilds (a Sequential's or a
    Functional's) restore their own states; layers that user code creates (a subclassed model's, a custom
    layer's, a keras_hub backbone's) cannot, so the model also saves ``{path: {slot: spec}}`` with its own
    variables and re-attaches those states when Keras loads its variables, before its layers load theirs.
    The file's states win: `load_weights` into a model compressed anew with the same plan (still blending)
    takes the spliced (or other) states the file holds."""

    _mutate_base: type = object

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()  # type: ignore[misc]
        base = self._mutate_base
        config["mutate_model"] = {"module": base.__module__, "class_name": base.__qualname__,
                                  "registered_name": keras.saving.get_registered_name(base)}
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Any:
        config = dict(config)
        base = config.pop("mutate_model")
        if cls is CompressedModel:
            target = compressed_model_class(_resolve(base))
            return target.from_config({**config, "mutate_model": base}, custom_objects)
        parent = super()
        return parent.from_config(config) if custom_objects is None else parent.from_config(config, custom_objects)

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        """Keras' ``fit``, refused at once while a kernel blends and no `CompressionCallback` is passed (its
        schedule would not advance; on JAX a train function traced by an earlier fit with the callback would
        otherwise run on without it)."""
        import inspect

        from mutate.operator.callback import CompressionCallback
        from mutate.operator.state import _MISSING_CALLBACK
        from mutate.operator.surgery import blending

        pending = blending(self)
        if pending:
            bound = inspect.signature(super().fit).bind_partial(*args, **kwargs).arguments  # type: ignore[misc]
            given = bound.get("callbacks") or []
            given = given.callbacks if isinstance(given, keras.callbacks.CallbackList) else given
            if not any(isinstance(c, CompressionCallback) for c in given):
                raise RuntimeError(_MISSING_CALLBACK.format(name=pending[0].path))
        try:
            return super().fit(*args, **kwargs)  # type: ignore[misc]
        except BaseException:  # Keras skips on_train_end when fit raises (Ctrl-C, a callback's error): no
            for k in blending(self):  # kernel stays driven (a later train_on_batch would train unscheduled)
                k.compression.set_driven(False)
            raise

    def train_on_batch(self, *args: Any, **kwargs: Any) -> Any:
        """Keras' ``train_on_batch``, refused before anything is traced while a kernel blends undriven (no
        `CompressionCallback` drives it): the refusal used to come from inside the trace, and on TensorFlow the
        half-traced train function then failed the ``fit`` with the callback that the message asks for
        ("Creating variables on a non-first call")."""
        from mutate.operator.state import _MISSING_CALLBACK
        from mutate.operator.surgery import blending

        undriven = [k for k in blending(self) if not k.compression._driven_py]
        if undriven:
            raise RuntimeError(_MISSING_CALLBACK.format(name=undriven[0].path))
        return super().train_on_batch(*args, **kwargs)  # type: ignore[misc]

    def train_step(self, *args: Any, **kwargs: Any) -> Any:
        return _in_phase(True, super().train_step, args, kwargs)  # type: ignore[misc]

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        return _in_phase(False, super().test_step, args, kwargs)  # type: ignore[misc]

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        return _in_phase(False, super().predict_step, args, kwargs)  # type: ignore[misc]

    def save_own_variables(self, store: Any) -> None:
        from mutate.operator.surgery import compressible, structural_paths

        for i, v in enumerate(self._trainable_variables + self._non_trainable_variables):
            store[str(i)] = v
        plan: dict[str, dict[str, Any]] = {}
        structure = structural_paths(self)  # the address a reload keeps (files before 2026-12 used layer.path)
        position = {id(layer): i for i, layer in enumerate(_walked(self))}
        order: dict[str, list[Any]] = {}
        for k in compressible(self):
            if k.state != "dense":
                spec = getattr(k.layer, state_attr(k.slot)).spec()
                plan.setdefault(structure[id(k.layer)], {})[k.slot.name] = spec
                order[structure[id(k.layer)]] = [position[id(k.layer)], type(k.layer).__name__]
        store["mutate"] = np.frombuffer(json.dumps(plan).encode(), dtype=np.uint8)
        # where each compressed layer sits in the model's walk: a layer that Keras named from its global counter
        # (a subclassed model's unnamed Dense) comes back under another name in a process that made layers before
        store["mutate_order"] = np.frombuffer(json.dumps(order).encode(), dtype=np.uint8)

    def load_own_variables(self, store: Any) -> None:
        keys = list(store.keys())
        if "mutate" in keys:
            plan = json.loads(bytes(np.asarray(store["mutate"], dtype=np.uint8)).decode())
            order = (json.loads(bytes(np.asarray(store["mutate_order"], dtype=np.uint8)).decode())
                     if "mutate_order" in keys else {})
            layers = _layers_by_address(self)
            walked = _walked(self)
            attached = False
            for path, slots in plan.items():
                layer = layers.get(path)
                if layer is None and path in order:  # renamed by Keras' counter: the same place in the walk
                    i, cls = order[path]
                    if i < len(walked) and type(walked[i]).__name__ == cls:
                        layer = walked[i]
                if layer is None:
                    raise ValueError(f"the saved model compresses {path!r}, which the loaded model {self.name!r} "
                                     "does not have")
                kind = kind_of(layer)
                for name, spec in slots.items():
                    slot = kind.slot(name)
                    current = getattr(layer, state_attr(slot), None)
                    if isinstance(current, KernelState):
                        if json.loads(json.dumps(current.spec())) == spec:
                            continue
                        detach(layer, slot)  # e.g. a model compressed anew (blending) loading a spliced file
                    attach(layer, slot, spec)
                    attached = True
            if attached:
                rebuild_optimizer(self)
        own = self._trainable_variables + self._non_trainable_variables
        for i, v in enumerate(own):
            v.assign(store[str(i)])


def _in_phase(training: bool, step: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """Run (or trace) one of Keras' steps with its phase set, for layers that nobody gave a ``training``
    (`mutate.operator.state.PHASE`)."""
    from mutate.operator.state import PHASE

    before, PHASE.value = PHASE.value, training
    try:
        return step(*args, **kwargs)
    finally:
        PHASE.value = before


def _walked(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's layers in walk order without mutate's own states: the same list saved and reloaded."""
    from mutate.operator.surgery import walk

    return [layer for layer, _ in walk(model) if layer is not model and not isinstance(layer, KernelState)]


def _layers_by_address(model: keras.Model) -> dict[str, keras.layers.Layer]:
    """The layers a saved plan's keys may name: each layer's structural address
    (`mutate.operator.surgery.structural_paths`: what files are keyed by), else its path when no other layer
    has it (what earlier files were keyed by). Keras' path is not kept by a reload: a nested Sequential's
    layer built in place is ``inner/h1``, reloaded ``h1``; its structural address is ``inner/h1`` in both."""
    from mutate.operator.surgery import structural_paths, walk

    layers = [layer for layer, _ in walk(model) if layer is not model]
    paths = [relative_layer_path(model, layer) for layer in layers]
    structure = structural_paths(model)
    out = {p: layer for p, layer in zip(paths, layers) if paths.count(p) == 1}
    out.update({structure[id(layer)]: layer for layer in layers})
    return out


def rebuild_optimizer(model: keras.Model) -> None:
    """A fresh optimizer of the same config, built on ``model``'s trainable variables now, when the compiled
    one was built on others. Loading a `.keras` file compiles (and builds the optimizer) before the model's
    variables load, so a subclassed model's states, re-attached only then, would be unknown to it: its saved
    slots would be skipped with a warning and `fit` would refuse the factors. The optimizer's children load
    after the model's own variables, so the saved slots (and iterations) fill the fresh one."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "built", False):
        return
    built_on = [id(v) for v in getattr(optimizer, "_trainable_variables", [])]
    if built_on == [id(v) for v in model.trainable_variables]:
        return
    fresh = type(optimizer).from_config(optimizer.get_config())
    fresh.build(model.trainable_variables)
    model.optimizer = fresh


def relative_layer_path(model: keras.layers.Layer, layer: keras.layers.Layer) -> str:
    path = layer.path or layer.name
    prefix = f"{model.name}/"
    return path[len(prefix):] if path.startswith(prefix) else path


def compressed_model_class(base: type) -> type:
    """The class a compressed model takes (made once per model class; same ``__name__``)."""
    if issubclass(base, CompressedModel):
        return base
    if base not in _MODEL_CLASSES:
        cls = type(base.__name__, (CompressedModel, base), {
            "_mutate_base": base, "__module__": __name__, "__qualname__": base.__qualname__,
            "__doc__": f"{base.__name__} holding kernels compressed by mutate (see mutate.operator.host)."})
        keras.saving.get_custom_objects()[MODEL_REGISTERED] = CompressedModel
        from keras.src.saving import object_registration

        object_registration.GLOBAL_CUSTOM_NAMES[cls] = MODEL_REGISTERED
        _MODEL_CLASSES[base] = cls
    return _MODEL_CLASSES[base]


def mark_model(model: keras.Model, compressed: bool) -> None:
    """Give ``model`` the compressed model class (or its own back)."""
    if compressed and not isinstance(model, CompressedModel):
        model.__class__ = compressed_model_class(type(model))
    elif not compressed and isinstance(model, CompressedModel):
        model.__class__ = model._mutate_base
