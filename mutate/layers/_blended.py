"""Blended layers: W = alpha * A + (1 - alpha) * (B∘C), with alpha, step and factors owned by each layer."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

import operators
from mutate.layers._common import ConvArgs, DenseArgs
from mutate.schedule import Schedule

_MISSING_CALLBACK = ("{cls} {name!r} is being trained without mutate.CompressionCallback(); pass "
                     "callbacks=[mutate.CompressionCallback()] to fit() so its alpha schedule advances.")


class BlendedLayer(keras.layers.Layer):
    """Base of the compressed layers: owns the dense kernel A (m x n), a bias, and the blend state.

    State variables (non-trainable, saved with the model): ``alpha`` (float32), ``step`` (int64, batches
    seen since compression), ``factored`` (int32, 1 once factors were computed) and ``driven`` (int32, 1
    while a CompressionCallback drives this layer). Factor variables are named ``factor_<name>`` and
    shaped by ``operator.specs(m, n)``.

    Args:
        operator: a registered operator name, or a Compressor.
        operator_params: parameters for a named operator.
        schedule: a `Schedule` or its config dict.
        refresh: recompute the factors from A at every update while alpha stays above 0 (ignored by
            operators that are not ``refreshable``, e.g. k-means).
        trainable_factors: per-factor overrides of the operator's default trainability.
    """

    def __init__(self, *, operator: str | operators.Compressor, operator_params: dict[str, Any] | None = None,
                 schedule: Schedule | dict[str, Any], refresh: bool = False,
                 trainable_factors: dict[str, bool] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compressor = operators.get(operator, **(operator_params or {}))
        self.schedule = schedule if isinstance(schedule, Schedule) else Schedule.from_config(schedule)
        self.refresh = bool(refresh)
        self.trainable_factors = dict(trainable_factors or {})
        self._driven_py = False

    # -- shapes, weights -----------------------------------------------------------------------------------
    def matrix_shape(self) -> tuple[int, int]:
        """(m, n) of the kernel viewed as a matrix."""
        shape = tuple(self.kernel.shape)
        return int(np.prod(shape[:-1])), int(shape[-1])

    def _build_blend_state(self) -> None:
        m, n = self.matrix_shape()
        self.compressor.check(m, n)
        self.alpha = self.add_weight(name="alpha", shape=(), initializer="ones", trainable=False)
        # counted inside the training graph (`_begin_call`); one replica counts under a distribution strategy
        self.step = self.add_weight(name="step", shape=(), dtype="int64", initializer="zeros", trainable=False,
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
        self._generated = {k: ops.convert_to_tensor(v) for k, v in self.compressor.generated_factors(m, n).items()}
        for fname, spec in specs.items():
            if fname in self._generated:
                continue
            trainable = self.trainable_factors.get(fname, spec.trainable)
            if trainable and not np.issubdtype(np.dtype(spec.dtype), np.floating):
                raise ValueError(f"factor {fname!r} of {self.compressor.name!r} has dtype {spec.dtype} and "
                                 "cannot be trainable.")
            self.factors[fname] = self.add_weight(name=f"factor_{fname}", shape=spec.shape, dtype=spec.dtype,
                                                  initializer="zeros", trainable=trainable)
        self.saliency = None
        if self.compressor.uses_saliency and keras.backend.backend() != "tensorflow":
            raise ValueError(f"operator {self.compressor.name!r} accumulates its saliency with a TensorFlow "
                             f"gradient tap, which the {keras.backend.backend()!r} backend does not run; use "
                             "KERAS_BACKEND=tensorflow, or another operator (e.g. pruning).")
        if self.compressor.uses_saliency:
            self.saliency = self.add_weight(name="saliency", shape=tuple(self.kernel.shape), initializer="zeros",
                                            trainable=False)

    # -- the blend ------------------------------------------------------------------------------------------
    def _begin_call(self, training: Any) -> None:
        """Refuse a training call without `CompressionCallback`; otherwise set alpha for this batch from the
        schedule and the layer's step, and count the batch.

        Both happen in the graph: alpha is a pure function of ``step`` (looked up in a constant table of the
        schedule's alphas, so it equals `Schedule.alpha` exactly), held at 1 until the factors exist, and the
        step an ``assign_add``. The host acts only when factors must be computed or refreshed, so several
        batches can run in one execution (``steps_per_execution``) and JAX's functional ``fit`` sees every
        update. An eager ``assign`` from the host before every batch cost about 1.5 ms a step on LeNet-300-100.
        """
        if training is not True:
            return
        message = _MISSING_CALLBACK.format(cls=type(self).__name__, name=self.name)
        if not self._driven_py:
            raise RuntimeError(message)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.debugging.assert_equal(self.driven, 1, message=message)
        self.alpha.assign(self.scheduled_alpha())
        self.step.assign_add(ops.cast(1, self.step.dtype))

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

    def tapped_kernel(self, training: Any) -> Any:
        """The kernel A, through a gradient tap that accumulates the saliency when the operator uses one."""
        if self.saliency is None or training is not True:
            return self.kernel
        from mutate.layers._saliency import saliency_tap

        return saliency_tap(self.kernel, self.saliency, self.alpha, self.compressor.saliency_decay)

    def blend(self, dense: Any, compressed: Any) -> Any:
        """``alpha * dense + (1 - alpha) * compressed``."""
        a = ops.cast(self.alpha, dense.dtype)
        return a * dense + (1.0 - a) * compressed

    def factor_tensors(self) -> dict[str, Any]:
        """The factor variables (and generated constants) by factor name."""
        return {**self._generated, **self.factors}

    def kernel_matrix(self) -> np.ndarray:
        """The current dense kernel A as an (m, n) NumPy matrix."""
        return ops.convert_to_numpy(self.kernel).reshape(self.matrix_shape())

    def factor_values(self) -> dict[str, np.ndarray]:
        """The current factors (generated ones included) as NumPy arrays, in the operator's order."""
        tensors = self.factor_tensors()
        m, n = self.matrix_shape()
        return {k: ops.convert_to_numpy(tensors[k]) for k in self.compressor.specs(m, n)}

    def refactor(self) -> None:
        """Compute the factors from the current A and assign them."""
        saliency = None if self.saliency is None else ops.convert_to_numpy(self.saliency)
        for fname, value in self.compressor.factor(self.kernel_matrix(), saliency=saliency).items():
            if fname in self.factors:
                self.factors[fname].assign(value)
        self.factored.assign(1)

    def sync_host(self) -> int:
        """Read ``step`` and ``factored`` into host-side caches (once per fit); returns the step."""
        self._host_step = int(ops.convert_to_numpy(self.step))
        self._host_factored = bool(int(ops.convert_to_numpy(self.factored)))
        return self._host_step

    def due(self, steps: int = 1) -> bool:
        """True when `advance` (over the next ``steps`` batches) will compute or refresh the factors: the
        callback must then give it variables that hold the live state (JAX)."""
        return self._refactor_at(steps) is not None

    def _refactor_at(self, steps: int) -> int | None:
        """The first of the next ``steps`` host steps at which the factors must be computed (the first update,
        or missing factors after it, e.g. after a restore) or refreshed (``refresh``, an update with alpha > 0);
        None when none is."""
        sched, start = self.schedule, self._host_step
        last = start + steps - 1
        if last < sched.begin_step:
            return None
        if not self._host_factored:
            return max(start, sched.begin_step)
        if self.refresh and self.compressor.refreshable:
            for step in range(max(start, sched.begin_step), min(last, sched.final_step) + 1):
                index = sched.update_index(step)
                if index and sched.alpha(step) > 0:
                    return step
        return None

    def advance(self, steps: int = 1) -> None:
        """Host work before the next ``steps`` batches (one execution): compute or refresh the factors when
        the schedule asks for it at any of those steps (then at the execution's start), then move the host
        count on. Alpha and the step are set in the graph (`_begin_call`), so a checkpoint is exact.
        """
        if self._refactor_at(steps) is not None:
            self.refactor()
            self._host_factored = True
        self._host_step += steps

    def current_step(self) -> int:
        """Batches this layer has seen since it was compressed."""
        return int(ops.convert_to_numpy(self.step))

    def current_alpha(self) -> float:
        """The alpha in force."""
        return float(ops.convert_to_numpy(self.alpha))

    def set_driven(self, on: bool) -> None:
        """Mark whether a CompressionCallback drives this layer (checked when training)."""
        self._driven_py = on
        self.driven.assign(1 if on else 0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(operator=self.compressor.name, operator_params=self.compressor.get_config(),
                      schedule=self.schedule.get_config(), refresh=self.refresh,
                      trainable_factors=self.trainable_factors)
        return config


@keras.saving.register_keras_serializable(package="mutate")
class CompressedDense(DenseArgs, BlendedLayer):
    """A Dense layer whose kernel A (m x n) blends into ``operator``'s factors.

    Input (..., m) -> output (..., n) = activation(blend(x @ A, x @ (B∘C)) + bias).
    """

    def __init__(self, units: int, *, activation: Any = None, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_dense(units, activation, use_bias)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        m = int(input_shape[-1])
        self.kernel = self.add_weight(name="kernel", shape=(m, self.units), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None
        self._build_blend_state()

    def call(self, inputs: Any, training: Any = None) -> Any:
        self._begin_call(training)
        return self._finish(self.blend(ops.matmul(inputs, self.tapped_kernel(training)),
                                       self.compressor.matmul(inputs, self.factor_tensors())))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._dense_config()}


@keras.saving.register_keras_serializable(package="mutate")
class CompressedEmbedding(BlendedLayer):
    """An Embedding whose table A (input_dim x output_dim) blends into ``operator``'s factors.

    Input ids (...) -> output (..., output_dim) = blend(A[ids], (B∘C)[ids]).
    """

    def __init__(self, input_dim: int, output_dim: int, *, mask_zero: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.mask_zero = bool(mask_zero)

    def build(self, input_shape: Any = None) -> None:
        self.kernel = self.add_weight(name="embeddings", shape=(self.input_dim, self.output_dim),
                                      initializer="uniform")
        self.bias = None
        self._build_blend_state()

    def call(self, inputs: Any, training: Any = None) -> Any:
        self._begin_call(training)
        ids = inputs if inputs.dtype in ("int32", "int64") else ops.cast(inputs, "int32")
        return self.blend(ops.take(self.tapped_kernel(training), ids, axis=0),
                          self.compressor.gather(ids, self.factor_tensors()))

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape, self.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "mask_zero": self.mask_zero}


@keras.saving.register_keras_serializable(package="mutate")
class CompressedConv2D(ConvArgs, BlendedLayer):
    """A Conv2D whose kernel (kh, kw, cin, cout), viewed as a (kh*kw*cin) x cout matrix, blends into factors.

    The blended kernel ``alpha*A + (1-alpha)*reshape(B∘C)`` is formed once per step, then convolved.
    """

    def __init__(self, filters: int, kernel_size: tuple[int, int], *, strides: tuple[int, int] = (1, 1),
                 padding: str = "valid", data_format: str | None = None, dilation_rate: tuple[int, int] = (1, 1),
                 activation: Any = None, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_conv(filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        shape = (*self.kernel_size, self._in_channels(input_shape), self.filters)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer="glorot_uniform")
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                     if self.use_bias else None)
        self._build_blend_state()

    def call(self, inputs: Any, training: Any = None) -> Any:
        self._begin_call(training)
        approx = ops.reshape(self.compressor.product(self.factor_tensors()), self.kernel.shape)
        return self._conv(inputs, self.blend(self.tapped_kernel(training), approx))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._conv_config()}
