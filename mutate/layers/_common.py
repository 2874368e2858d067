"""Argument handling and forward arithmetic shared by the blended and spliced Dense and Conv2D layers."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


def serialize_activation(activation: Any) -> Any:
    return keras.activations.serialize(activation) if activation is not None else None


class DenseArgs:
    """``units``, ``activation``, ``use_bias``, and the output step ``activation(x + bias)``."""

    def _init_dense(self, units: int, activation: Any, use_bias: bool) -> None:
        self.units = int(units)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.supports_masking = True

    def _finish(self, x: Any) -> Any:
        if self.bias is not None:
            x = x + self.bias
        return self.activation(x) if self.activation is not None else x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], self.units)

    def _dense_config(self) -> dict[str, Any]:
        return {"units": self.units, "activation": serialize_activation(self.activation), "use_bias": self.use_bias}


class ConvArgs:
    """Conv2D arguments and ``activation(conv(x, kernel) + bias)``."""

    def _init_conv(self, filters: int, kernel_size: Any, strides: Any, padding: str, data_format: str | None,
                   dilation_rate: Any, activation: Any, use_bias: bool) -> None:
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.strides = tuple(int(s) for s in strides)
        self.padding = padding
        self.data_format = data_format or keras.config.image_data_format()
        self.dilation_rate = tuple(int(d) for d in dilation_rate)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)

    def _in_channels(self, input_shape: tuple[int | None, ...]) -> int:
        return int(input_shape[-1] if self.data_format == "channels_last" else input_shape[1])

    def _conv(self, inputs: Any, kernel: Any) -> Any:
        x = ops.conv(inputs, kernel, strides=self.strides, padding=self.padding, data_format=self.data_format,
                     dilation_rate=self.dilation_rate)
        if self.bias is not None:
            shape = (1, 1, 1, self.filters) if self.data_format == "channels_last" else (1, self.filters, 1, 1)
            x = x + ops.reshape(self.bias, shape)
        return self.activation(x) if self.activation is not None else x

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        probe = keras.layers.Conv2D(self.filters, self.kernel_size, strides=self.strides, padding=self.padding,
                                    data_format=self.data_format, dilation_rate=self.dilation_rate)
        return probe.compute_output_shape(input_shape)

    def _conv_config(self) -> dict[str, Any]:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "data_format": self.data_format, "dilation_rate": self.dilation_rate,
                "activation": serialize_activation(self.activation), "use_bias": self.use_bias}
