"""`KernelState`: the compression of one kernel, held by the layer it compresses.

Blending, it owns the operator's factors and the schedule state and turns the layer's own kernel A into
``alpha * A + (1 - alpha) * (B∘C)`` at each call; spliced, A is gone and it owns only the operator's packed
arrays, whose product the layer computes with. Its variables save with the layer (``<layer>/mutate_<slot>``).
"""

from __future__ import annotations

import threading
from typing import Any

import keras
import numpy as np
from keras import ops

import operators
from mutate.operator.anchor import opaque
from mutate.operator.kinds import View
from mutate.operator.schedule import Schedule

_METHODS = ("raw", "huffman", "bytes", *(f"gaps{b}" for b in range(1, 17)))
"""Stored ids of `operators.huffman.encode_stream`'s methods (in a saved file's ``<i>.coded`` entry)."""
_MISSING_CALLBACK = ("layer {name!r} is being trained without mutate.CompressionCallback(); pass "
                     "callbacks=[mutate.CompressionCallback()] to fit() so its alpha schedule advances.")


class _Phase(threading.local):
    """Per thread (tf.distribute traces replicas in threads): the phase of the Keras step being traced or run
    (`CompressedModel.train_step`: True; ``test_step``, ``predict_step``: False; None outside them). It
    tells a model whose call takes no ``training`` whether a batch trains."""

    value: bool | None = None


PHASE = _Phase()


def untold_training(fallback: bool) -> bool:
    """``training`` for a call that nobody gave one: the Keras step's phase, else ``fallback``."""
    return fallback if PHASE.value is None else PHASE.value


def _first_call_this_pass(state: Any) -> bool:
    """Whether this is ``state``'s first call in the current forward pass: the pass is JAX's stateless scope
    (its trainer calls the model's ``call`` inside one per step, with no call context around it), else Keras'
    call context, which the outermost layer's call opens and every nested call shares (traced once per
    training step, or per batch when eager). A layer called twice per batch would otherwise count two steps
    per batch."""
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    ctx = get_stateless_scope() or global_state.get_global_attribute("current_call_ctx")
    if ctx is None:
        return True
    counted = ctx.__dict__.setdefault("mutate_counted", set())
    if id(state) in counted:
        return False
    counted.add(id(state))
    return True


def _step_dtype() -> str:
    """int64, or int32 on JAX without ``jax_enable_x64`` (which would truncate int64 with a warning)."""
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return "int32"
    return "int64"


class KernelState(keras.layers.Layer):
    """The blend (or spliced) state of one kernel.

    Blending variables (non-trainable unless a factor): ``alpha`` (float32), ``step`` (int64, int32 on JAX
    without x64: batches seen since compression, counted in the graph), ``factored`` (int32, 1 once factors
    exist), ``driven`` (int32, 1 while a CompressionCallback drives it), ``factor_<name>`` shaped by
    ``operator.specs(m, n)``, a ``saliency`` when the operator uses one, and on JAX with an in-graph refresh
    a non-trainable ``shift_<name>`` per trainable factor (never saved). Spliced: ``packed_<name>`` shaped
    by ``operator.packed_specs(m, n)``, and ``decoded_<name>``: the codes of its bit-packed integer arrays
    (and what the operator derives from them), held for the layer's calls, never saved or counted.

    Args:
        spec: ``{"operator", "params", "schedule", "refresh", "trainable_factors", "spliced"}``.
        view: the kernel's matrix view.
        host: the name of the layer it compresses (for messages).
    """

    hold_codes = True
    """Spliced calls compute with the held decoded codes (`_build_packed`); False unpacks the packed arrays on
    every call, as before (`experiments/bench_spliced.py` times both)."""

    def __init__(self, spec: dict[str, Any], view: View, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compressor = operators.get(spec["operator"], **spec.get("params", {}))
        self.schedule = Schedule.from_config(spec["schedule"])
        self.refresh = bool(spec.get("refresh", False))
        self.trainable_factors = dict(spec.get("trainable_factors") or {})
        self.spliced = bool(spec.get("spliced", False))
        self.view = view
        self.host = host
        self._driven_py = False
        self._host_step = 0
        self._host_factored = False
        # refreshes computed in the training step (see `_refresh_in_graph`); elsewhere the callback refreshes
        self.graph_refresh = (self.refresh and self.compressor.refreshable and self.compressor.graph_refresh
                              and keras.backend.backend() in ("tensorflow", "jax"))
        m, n = self.matrix_shape()
        self.compressor.check(m, n)
        self._generated = {k: ops.convert_to_tensor(v) for k, v in self.compressor.generated_factors(m, n).items()}
        if self.spliced:
            self._build_packed()
        else:
            self._build_blend()
        self.built = True

    def spec(self) -> dict[str, Any]:
        """What rebuilds this state (the host's config keeps it)."""
        return {"operator": self.compressor.name, "params": self.compressor.get_config(),
                "schedule": self.schedule.get_config(), "refresh": self.refresh,
                "trainable_factors": self.trainable_factors, "spliced": self.spliced}

    def matrix_shape(self) -> tuple[int, int]:
        return self.view.m, self.view.n

    # -- variables ------------------------------------------------------------------------------------------
    def _build_blend(self) -> None:
        m, n = self.matrix_shape()
        self.alpha = self.add_weight(name="alpha", shape=(), initializer="ones", trainable=False, dtype="float32")
        self.step = self.add_weight(name="step", shape=(), dtype=_step_dtype(), initializer="zeros", trainable=False,
                                    aggregation="only_first_replica")
        self.factored = self.add_weight(name="factored", shape=(), dtype="int32", initializer="zeros",
                                        trainable=False)
        self.driven = self.add_weight(name="driven", shape=(), dtype="int32", initializer="zeros", trainable=False)
        specs = self.compressor.specs(m, n)
        unknown = set(self.trainable_factors) - set(specs)
        if unknown:
            raise ValueError(f"trainable_factors names {sorted(unknown)}, but operator "
                             f"{self.compressor.name!r} has factors {list(specs)}.")
        self.factors: dict[str, keras.Variable] = {}
        for fname, spec in specs.items():
            if fname in self._generated:
                continue
            trainable = self.trainable_factors.get(fname, spec.trainable)
            if trainable and not np.issubdtype(np.dtype(spec.dtype), np.floating):
                raise ValueError(f"factor {fname!r} of {self.compressor.name!r} has dtype {spec.dtype} and "
                                 "cannot be trainable.")
            self.factors[fname] = self.add_weight(name=f"factor_{fname}", shape=spec.shape, dtype=spec.dtype,
                                                  initializer="zeros", trainable=trainable)
        # JAX's trainer keeps no assignment to a trainable variable made inside the training step, only to
        # non-trainable ones: an in-graph refresh there moves a trainable factor through its `shift` (the
        # factor the operator sees is ``factor + shift``; the gradient still trains ``factor``). Never saved:
        # a file holds the sum (`_stored_value`), so files are the same on every backend.
        self.shifts: dict[str, keras.Variable] = {}
        if self.graph_refresh and keras.backend.backend() == "jax":
            for fname, var in self.factors.items():
                if var.trainable:
                    self.shifts[fname] = self.add_weight(name=f"shift_{fname}", shape=tuple(var.shape),
                                                         dtype=var.dtype, initializer="zeros", trainable=False)
        self.saliency = None
        if self.compressor.uses_saliency:
            if keras.backend.backend() != "tensorflow":
                raise ValueError(f"operator {self.compressor.name!r} accumulates its saliency with a TensorFlow "
                                 f"gradient tap, which the {keras.backend.backend()!r} backend does not run; use "
                                 "KERAS_BACKEND=tensorflow, or another operator (e.g. pruning).")
            self.saliency = self.add_weight(name="saliency", shape=self.view.shape, initializer="zeros",
                                            trainable=False, dtype="float32")

    def _build_packed(self) -> None:
        self.packed: dict[str, keras.Variable] = {}
        specs = self.compressor.packed_specs(*self.matrix_shape())
        for pname, spec in specs.items():
            trainable = spec.trainable and np.issubdtype(np.dtype(spec.dtype), np.floating)
            self.packed[pname] = self.add_weight(name=f"packed_{pname}", shape=spec.shape, dtype=spec.dtype,
                                                 initializer="zeros", trainable=trainable)
        # The bit-packed integer arrays (masks, codes, indices) never change once spliced: their codes are
        # decoded once, when the packed arrays are assigned or loaded, and held for the layer's calls (an
        # unpack on every call made a spliced pruning or k-means layer train slower than the dense one).
        # Not saved, not counted by `model_size`; an export still unpacks the packed arrays in its graph.
        try:
            probe = self._decode({k: np.zeros(spec.shape, spec.dtype) for k, spec in specs.items()})
        except (TypeError, ValueError, AttributeError):  # an operator reading an integer array other than
            probe = {}  # through `unpack_codes` (a third party's): nothing is held, every call unpacks
        self.decoded: dict[str, keras.Variable] = {
            name: self.add_weight(name=f"decoded_{name.replace('.', '_')}", shape=tuple(value.shape), dtype=dtype,
                                  initializer="zeros", trainable=False) for name, (value, dtype) in probe.items()}

    def _decode(self, packed: dict[str, Any]) -> dict[str, tuple[Any, str]]:
        """What a spliced layer holds (eagerly, the way the operator unpacks): each bit-packed integer array's
        codes (``name``; uint8 up to 8 bits) and what the operator derives from them alone (``name.extra``)."""
        from operators._bits import Decoded

        wrapped = {k: Decoded(v) for k, v in packed.items() if "float" not in keras.backend.standardize_dtype(v.dtype)}
        self.compressor.unpack({**packed, **wrapped}, *self.matrix_shape())
        out: dict[str, tuple[Any, str]] = {}
        for k, w in wrapped.items():
            if w.codes is not None:
                out[k] = (w.codes, "uint8" if w.bits <= 8 else "int32")
                out.update({f"{k}.{e}": (np.asarray(v), str(np.asarray(v).dtype)) for e, v in w.extra.items()})
        return out

    def _held(self, anchor: Any) -> dict[str, Any]:
        """The packed integer arrays as `Decoded` (their held codes), or nothing when exporting (``anchor``)."""
        from operators._bits import Decoded

        if anchor is not None or not self.hold_codes:
            return {}
        out = {}
        for k in self.packed:
            if k in self.decoded:
                extra = {name.split(".", 1)[1]: var for name, var in self.decoded.items() if name.startswith(f"{k}.")}
                out[k] = Decoded(self.packed[k], ops.cast(self.decoded[k], "int32"), extra)
        return out

    def _fill_decoded(self) -> None:
        if not self.decoded:
            return
        for name, (value, _) in self._decode({k: v.value for k, v in self.packed.items()}).items():
            self.decoded[name].assign(ops.cast(value, self.decoded[name].dtype))

    def assign_packed(self, arrays: dict[str, np.ndarray]) -> None:
        for pname, var in self.packed.items():
            var.assign(arrays[pname])
        self._fill_decoded()

    # -- saving: an entropy-coded stack stores its coded streams and decodes them when loaded ---------------
    @property
    def stored_weights(self) -> list:
        """The variables a file holds: all but the decoded copies of packed arrays (rebuilt when loaded)."""
        held = {id(v) for v in [*getattr(self, "decoded", {}).values(), *getattr(self, "shifts", {}).values()]}
        return [v for v in self._trainable_variables + self._non_trainable_variables if id(v) not in held]

    def _stored_value(self, var: Any) -> Any:
        """What a file holds for ``var``: a factor with a `shift` holds the factor the operator sees."""
        for fname, shift in getattr(self, "shifts", {}).items():
            if self.factors[fname] is var:
                return ops.convert_to_numpy(var.value + shift.value)
        return var

    def _clear_shifts(self) -> None:
        for shift in getattr(self, "shifts", {}).values():
            shift.assign(ops.zeros(shift.shape, shift.dtype))

    def save_own_variables(self, store: Any) -> None:
        own = self.stored_weights
        coded = self.compressor.encode(self.factor_values()) if self.spliced and self.compressor.entropy_coded else {}
        names = {id(var): pname for pname, var in getattr(self, "packed", {}).items()}
        for i, var in enumerate(own):
            c = coded.get(names.get(id(var), ""))
            if c is None:
                store[str(i)] = self._stored_value(var)
                continue
            store[str(i)] = np.asarray(c["payload"], np.uint8)
            store[f"{i}.lengths"] = np.asarray(c["lengths"], np.uint8)
            store[f"{i}.coded"] = np.array([_METHODS.index(str(c["method"])), c["count"], c["size"],
                                            c["alphabet"]], np.int64)

    def load_own_variables(self, store: Any) -> None:
        from operators._bits import code_bits, pack_codes
        from operators.huffman import decode_stream

        own = self.stored_weights
        plain = [k for k in store.keys() if "." not in k]
        if len(plain) != len(own):
            raise ValueError(f"{self.host}: expected {len(own)} compression variables, but the file holds {len(plain)}.")
        for i, var in enumerate(own):
            if f"{i}.coded" not in store.keys():
                var.assign(store[str(i)])
                continue
            method, count, size, alphabet = (int(v) for v in np.asarray(store[f"{i}.coded"]))
            symbols = decode_stream({"method": _METHODS[method], "payload": np.asarray(store[str(i)]),
                                     "lengths": np.asarray(store[f"{i}.lengths"]), "count": count}, size, alphabet)
            var.assign(pack_codes(symbols, code_bits(alphabet)))
        self._clear_shifts()
        if self.spliced:
            self._fill_decoded()

    # -- the graph ------------------------------------------------------------------------------------------
    def factor_tensors(self, anchor: Any = None, every: bool = False) -> dict[str, Any]:
        """The factor tensors the operator's product takes (unpacked when spliced; generated ones included).

        ``anchor``: a zero computed from the input at run time (export only, see `mutate.operator.export`):
        the spliced integer arrays (bitmasks, codes, indices) pass through a reshape whose shape depends on
        it, so a converter that folds constant subgraphs (LiteRT's) keeps them packed and unpacks at run time.
        ``every``: the float arrays too (when the product is formed as a kernel, e.g. a low-rank EinsumDense,
        whose B @ C of two constants would be folded into the dense matrix).
        """
        if self.spliced:
            packed: dict[str, Any] = {k: opaque(v, anchor) if anchor is not None and (every or "int" in str(v.dtype))
                                      else v for k, v in self.packed.items()}
            packed.update(self._held(anchor))  # not exporting: the held codes (`_build_packed`)
            return {**self._generated_tensors(anchor), **self.compressor.unpack(packed, *self.matrix_shape())}
        if self.shifts:
            return {**self._generated, **{k: self._shifted(k) if k in self.shifts else v
                                          for k, v in self.factors.items()}}
        return {**self._generated, **self.factors}

    def _shifted(self, name: str) -> Any:
        """``factor + shift`` summed in the variables' dtype, then cast as Keras autocasts a variable (mixed
        precision): under bfloat16 each was rounded before the sum, and a saved model (which stores the sum)
        computed something else once loaded."""
        with keras.src.backend.AutocastScope(None):
            total = self.factors[name].value + self.shifts[name].value
        scope = keras.src.backend.get_autocast_scope()
        return total if scope is None else scope.maybe_cast(total)

    def fold_shifts(self) -> None:
        """Move each `shift` into its factor (the sum unchanged): after the blend's last refresh, so that an
        optimizer's weight decay shrinks the factor the operator sees, as on the other backends (it shrank
        ``factor`` alone, pulling the sum toward the shift)."""
        for name, shift in self.shifts.items():
            with keras.src.backend.AutocastScope(None):
                self.factors[name].assign(self.factors[name].value + shift.value)
            shift.assign(ops.zeros(shift.shape, shift.dtype))

    def _generated_tensors(self, anchor: Any) -> dict[str, Any]:
        """The generated factors: constants, or (exporting) computed in the graph from the run-time zero."""
        if anchor is None:
            return self._generated
        out = dict(self._generated)
        for name in self._generated:
            value = self.compressor.generate_tensor(name, *self.matrix_shape(), anchor)
            if value is not None:
                out[name] = value
        return out

    def begin_call(self, training: Any, a: Any = None) -> None:
        """Refuse a training call without `CompressionCallback`; otherwise set alpha from the step (in the
        graph: a constant table of `Schedule.alpha`, held at 1 until the factors exist), refresh the factors
        from ``a`` (the layer's kernel) when a refresh is due and runs in the graph, and count the batch.
        The host acts only when factors are computed or refreshed on it, so ``steps_per_execution`` > 1 and
        JAX's functional ``fit`` see every update."""
        if training is None:  # a model whose call takes no `training`: the phase of Keras' step
            training = untold_training(False)
        if self.spliced or training is not True:
            return
        message = _MISSING_CALLBACK.format(name=self.host)
        if not self._driven_py:
            raise RuntimeError(message)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.debugging.assert_equal(self.driven, 1, message=message)
        if not _first_call_this_pass(self):  # called again in the same forward pass (a shared layer, a layer
            return  # under TimeDistributed): the batch is counted and alpha set once, at its first call
        with keras.src.backend.AutocastScope(None):  # PyTorch's assign writes to the variable's value, which
            self.alpha.assign(self.scheduled_alpha())  # under mixed precision is a float16 copy: lost
        if self.graph_refresh and a is not None:
            self._refresh_in_graph(a)
        self.step.assign_add(ops.cast(1, self.step.dtype))

    def _refresh_in_graph(self, a: Any) -> None:
        """At an update step after the first with alpha > 0 (where the host would refresh), assign
        ``compressor.refreshed_tensor(A, factors)`` before the batch uses the factors (a conditional, so
        other steps cost one comparison). The same step rule as `refactor_at`."""
        sched = self.schedule
        table = ops.convert_to_tensor(np.array(
            [False] + [sched.alpha(sched.begin_step + i * sched.frequency) > 0 for i in range(1, sched.num_updates)]))
        rel = ops.cast(self.step, "int32") - sched.begin_step
        index = ops.clip(rel // sched.frequency, 0, sched.num_updates - 1)
        due = ops.logical_and(ops.logical_and(rel >= 0, rel % sched.frequency == 0),
                              ops.logical_and(rel <= sched.final_step - sched.begin_step, self.factored > 0))
        due = ops.logical_and(due, ops.take(table, index))
        if keras.backend.backend() == "jax":
            self._refresh_functional(a, due)
            return
        import tensorflow as tf

        def refresh() -> Any:
            matrix = self.view.matrix_tensor(ops.cast(tf.stop_gradient(a), "float32"))
            current = {**self._generated, **{k: v.value for k, v in self.factors.items()}}
            for name, value in self.compressor.refreshed_tensor(matrix, current).items():
                if name in self.factors:
                    self.factors[name].assign(ops.cast(value, self.factors[name].dtype))
            return tf.constant(True)

        tf.cond(due, refresh, lambda: tf.constant(False))

    def _refresh_functional(self, a: Any, due: Any) -> None:
        """`_refresh_in_graph` where the step is a pure function (JAX): ``ops.cond`` returns each refreshed
        factor's new state (a trainable factor's `shift`, so that factor + shift is the refreshed value; a
        non-trainable factor's value) or the current one, and the state is assigned either way."""
        current = self.factor_tensors()

        def target(name: str) -> Any:
            return self.shifts[name] if name in self.shifts else self.factors[name]

        def keep() -> dict[str, Any]:
            return {name: target(name).value for name in self.factors}

        def refresh() -> dict[str, Any]:
            matrix = self.view.matrix_tensor(ops.cast(ops.stop_gradient(a), "float32"))
            new = self.compressor.refreshed_tensor(matrix, current)
            out = keep()
            for name, value in new.items():
                if name in self.shifts:
                    out[name] = ops.stop_gradient(ops.cast(value, self.factors[name].dtype) - self.factors[name].value)
                elif name in self.factors:
                    out[name] = ops.stop_gradient(ops.cast(value, self.factors[name].dtype))
            return out

        for name, value in ops.cond(due, refresh, keep).items():
            target(name).assign(value)

    def scheduled_alpha(self) -> Any:
        """Alpha at the current ``step`` (in the graph): `Schedule.alpha`, or 1 while no factors exist."""
        sched = self.schedule
        table = ops.convert_to_tensor(np.array([1.0] + [sched.alpha(sched.begin_step + i * sched.frequency)
                                                        for i in range(sched.num_updates)], np.float32))
        step = ops.cast(self.step, "int32")
        passed = ops.where(step < sched.begin_step, 0,
                           ops.minimum((step - sched.begin_step) // sched.frequency + 1, sched.num_updates))
        alpha = ops.take(table, passed)
        return ops.where(self.factored > 0, alpha, ops.ones_like(alpha))

    def tap(self, a: Any, training: Any) -> Any:
        """A through the saliency tap when the operator accumulates one (gradient_pruning)."""
        if self.saliency is None or (training if training is not None else untold_training(False)) is not True:
            return a
        from mutate.operator.saliency import saliency_tap

        return saliency_tap(a, self.saliency, self.alpha, self.compressor.saliency_decay)

    def blend(self, dense: Any, compressed: Any) -> Any:
        """``alpha * dense + (1 - alpha) * compressed`` (in the dense term's dtype)."""
        a = ops.cast(self.alpha, dense.dtype)
        return a * dense + (1.0 - a) * ops.cast(compressed, dense.dtype)

    def product_kernel(self, dtype: Any, anchor: Any = None) -> Any:
        """B∘C in the kernel's shape."""
        return ops.cast(self.view.from_matrix(self.compressor.product(self.factor_tensors(anchor, every=True))),
                        dtype)

    def kernel(self, a: Any, training: Any, dtype: Any, anchor: Any = None) -> Any:
        """The kernel the layer computes with: the blend of A (a tensor, or None when spliced) and B∘C."""
        if self.spliced:
            return self.product_kernel(dtype, anchor)
        self.begin_call(training, a)
        a = self.tap(a, training)
        return self.blend(a, self.product_kernel(a.dtype))

    # -- the host side -----------------------------------------------------------------------------------------
    def factor_values(self) -> dict[str, np.ndarray]:
        """The current factors (generated ones included) as NumPy arrays, in the operator's order."""
        tensors = self.factor_tensors()
        return {k: ops.convert_to_numpy(tensors[k]) for k in self.compressor.specs(*self.matrix_shape())}

    def product_matrix(self) -> np.ndarray:
        """B∘C as an (m, n) NumPy matrix."""
        return ops.convert_to_numpy(self.compressor.product(self.factor_tensors())).reshape(self.matrix_shape())

    def refactor(self, a_matrix: np.ndarray) -> None:
        """Compute the factors from A (an (m, n) matrix) and assign them: the operator's factoring the first
        time; at a refresh, its `refreshed` (from the current factors) when it has an in-graph refresh (the
        backends that refresh on the host compute what TensorFlow's graph does), a new factoring otherwise."""
        saliency = None if self.saliency is None else self.view.to_matrix(ops.convert_to_numpy(self.saliency))
        if self.refresh and self.compressor.graph_refresh and self.is_factored():  # the graph's rule on the host
            factors = self.compressor.refreshed(a_matrix, self.factor_values())
        else:
            factors = self.compressor.factor(a_matrix, saliency=saliency)
        for fname, value in factors.items():
            if fname in self.factors:
                self.factors[fname].assign(value)
        self._clear_shifts()
        self.factored.assign(1)

    def is_factored(self) -> bool:
        return self.spliced or bool(int(ops.convert_to_numpy(self.factored)))

    def current_step(self) -> int:
        return int(ops.convert_to_numpy(self.step)) if not self.spliced else -1

    def current_alpha(self) -> float:
        return 0.0 if self.spliced else float(ops.convert_to_numpy(self.alpha))

    def finished(self) -> bool:
        """Alpha reached 0 with factors in place: ready to splice."""
        return not self.spliced and self.current_alpha() == 0.0 and self.is_factored()

    def set_driven(self, on: bool) -> None:
        self._driven_py = on
        if not self.spliced:
            self.driven.assign(1 if on else 0)

    def sync_host(self) -> int:
        """Read ``step`` and ``factored`` into host-side caches (once per epoch); returns the step."""
        self._host_step = int(ops.convert_to_numpy(self.step))
        self._host_factored = bool(int(ops.convert_to_numpy(self.factored)))
        return self._host_step

    def refactor_at(self, steps: int) -> int | None:
        """The first of the next ``steps`` host steps at which factors must be computed (the first update,
        or missing factors after it) or refreshed (``refresh``, an update with alpha > 0); None if none."""
        sched, start = self.schedule, self._host_step
        last = start + steps - 1
        if self.spliced or last < sched.begin_step:
            return None
        if not self._host_factored:
            return max(start, sched.begin_step)
        if self.refresh and self.compressor.refreshable and not self.graph_refresh:
            for step in range(max(start, sched.begin_step), min(last, sched.final_step) + 1):
                if sched.update_index(step) and sched.alpha(step) > 0:
                    return step
        return None
