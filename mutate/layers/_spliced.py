"""Spliced layers: what a blended layer becomes once alpha is 0. A is gone; only the factors remain.

Pair operators (low-rank) splice into two standard Keras layers, subclassed only to remember their
``origin`` (the layer they replace), so `model_size` can compare them with the dense layer. Other operators
splice into one `Spliced*` layer that stores the operator's packed arrays and computes its product.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

import operators
from mutate.layers._common import ConvArgs, DenseArgs


class _Origin:
    """Mixin: ``origin`` = {"layer", "operator", "params", "shape": [m, n], "part"} of the replaced layer."""

    def _set_origin(self, origin: dict[str, Any] | None) -> None:
        self.origin = dict(origin or {})

    def _with_origin(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "origin": self.origin}


@keras.saving.register_keras_serializable(package="mutate")
class FactorDense(_Origin, keras.layers.Dense):
    """A plain Dense layer that is one factor of a spliced layer (see ``origin``)."""

    def __init__(self, *args: Any, origin: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_origin(origin)

    def get_config(self) -> dict[str, Any]:
        return self._with_origin(super().get_config())


@keras.saving.register_keras_serializable(package="mutate")
class FactorConv2D(_Origin, keras.layers.Conv2D):
    """A plain Conv2D layer that is one factor of a spliced convolution (see ``origin``)."""

    def __init__(self, *args: Any, origin: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_origin(origin)

    def get_config(self) -> dict[str, Any]:
        return self._with_origin(super().get_config())


@keras.saving.register_keras_serializable(package="mutate")
class FactorEmbedding(_Origin, keras.layers.Embedding):
    """A plain Embedding that is the left factor of a spliced embedding table (see ``origin``)."""

    def __init__(self, *args: Any, origin: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._set_origin(origin)

    def get_config(self) -> dict[str, Any]:
        return self._with_origin(super().get_config())


class SplicedLayer(_Origin, keras.layers.Layer):
    """Stores an operator's packed arrays for an (m, n) matrix and computes with its product.

    Args:
        operator: registered operator name.
        operator_params: its parameters.
        matrix_shape: (m, n) of the replaced kernel.
        origin: what the layer replaces.
    """

    def __init__(self, *, operator: str, operator_params: dict[str, Any], matrix_shape: tuple[int, int],
                 origin: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.compressor = operators.get(operator, **operator_params)
        self.matrix_shape = (int(matrix_shape[0]), int(matrix_shape[1]))
        self._set_origin(origin)

    def _build_packed(self) -> None:
        self._generated = {k: ops.convert_to_tensor(v)
                           for k, v in self.compressor.generated_factors(*self.matrix_shape).items()}
        self.packed: dict[str, keras.Variable] = {}
        for pname, spec in self.compressor.packed_specs(*self.matrix_shape).items():
            trainable = spec.trainable and np.issubdtype(np.dtype(spec.dtype), np.floating)
            self.packed[pname] = self.add_weight(name=f"packed_{pname}", shape=spec.shape, dtype=spec.dtype,
                                                 initializer="zeros", trainable=trainable)

    def assign_packed(self, arrays: dict[str, np.ndarray]) -> None:
        """Assign the operator's packed arrays (as returned by ``operator.pack``)."""
        for pname, var in self.packed.items():
            var.assign(arrays[pname])

    def factor_tensors(self) -> dict[str, Any]:
        """The factor tensors that the operator's product takes, unpacked from the stored arrays."""
        return {**self._generated, **self.compressor.unpack(dict(self.packed), *self.matrix_shape)}

    def get_config(self) -> dict[str, Any]:
        return self._with_origin({**super().get_config(), "operator": self.compressor.name,
                                  "operator_params": self.compressor.get_config(),
                                  "matrix_shape": list(self.matrix_shape)})


@keras.saving.register_keras_serializable(package="mutate")
class SplicedDense(DenseArgs, SplicedLayer):
    """Dense computed as ``activation(x @ (B∘C) + bias)`` from the operator's stored arrays."""

    def __init__(self, units: int, *, activation: Any = None, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_dense(units, activation, use_bias)

    def build(self, input_shape: Any) -> None:
        self._build_packed()
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros") if self.use_bias else None

    def call(self, inputs: Any) -> Any:
        return self._finish(self.compressor.matmul(inputs, self.factor_tensors()))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._dense_config()}


@keras.saving.register_keras_serializable(package="mutate")
class SplicedEmbedding(SplicedLayer):
    """Embedding lookup of rows of ``B∘C`` from the operator's stored arrays."""

    def __init__(self, *, mask_zero: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_zero = bool(mask_zero)
        self.bias = None

    def build(self, input_shape: Any = None) -> None:
        self._build_packed()

    def call(self, inputs: Any) -> Any:
        ids = inputs if inputs.dtype in ("int32", "int64") else ops.cast(inputs, "int32")
        return self.compressor.gather(ids, self.factor_tensors())

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape, self.matrix_shape[1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mask_zero": self.mask_zero}


@keras.saving.register_keras_serializable(package="mutate")
class SplicedConv2D(ConvArgs, SplicedLayer):
    """Conv2D whose kernel is ``reshape(B∘C, (kh, kw, cin, cout))`` from the operator's stored arrays."""

    def __init__(self, filters: int, kernel_size: tuple[int, int], *, strides: tuple[int, int] = (1, 1),
                 padding: str = "valid", data_format: str | None = None, dilation_rate: tuple[int, int] = (1, 1),
                 activation: Any = None, use_bias: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._init_conv(filters, kernel_size, strides, padding, data_format, dilation_rate, activation, use_bias)

    def build(self, input_shape: Any) -> None:
        self._build_packed()
        self.bias = (self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
                     if self.use_bias else None)

    def call(self, inputs: Any) -> Any:
        m, n = self.matrix_shape
        cin = m // (self.kernel_size[0] * self.kernel_size[1])
        return self._conv(inputs, ops.reshape(self.compressor.product(self.factor_tensors()),
                                              (*self.kernel_size, cin, n)))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._conv_config()}
