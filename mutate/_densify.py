"""`densify`: turn a compressed layer (blending or spliced) back into a plain layer holding its current
weight matrix, so that a tighter mutation can compress it again."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from mutate.layers import BlendedLayer, SplicedLayer
from mutate.layers._lstm import is_lstm, lstm_arguments, lstm_weights
from mutate.surgery import _check_model, _conv_geometry, _rebuild, _Replacement


def _parts(model: keras.Model, name: str) -> list[keras.layers.Layer]:
    direct = [layer for layer in model.layers if layer.name == name and isinstance(layer, (BlendedLayer, SplicedLayer))]
    if direct:
        return direct
    parts = [layer for layer in model.layers if getattr(layer, "origin", {}).get("layer") == name]
    return sorted(parts, key=lambda layer: layer.origin.get("part", 0))


def _matrix(parts: list[keras.layers.Layer]) -> np.ndarray:
    """The (m, n) weight matrix the parts compute with now."""
    first = parts[0]
    if isinstance(first, BlendedLayer):
        alpha = first.current_alpha()
        product = ops.convert_to_numpy(first.compressor.product(first.factor_tensors()))
        return alpha * first.kernel_matrix() + (1.0 - alpha) * product.reshape(first.matrix_shape())
    if isinstance(first, SplicedLayer):
        return ops.convert_to_numpy(first.compressor.product(first.factor_tensors())).reshape(first.matrix_shape)
    left = ops.convert_to_numpy(first.embeddings if isinstance(first, keras.layers.Embedding) else first.kernel)
    right = ops.convert_to_numpy(lstm_weights(parts[1])[0] if is_lstm(parts[1]) else parts[1].kernel)
    return left.reshape(-1, left.shape[-1]) @ right.reshape(-1, right.shape[-1])


def _plain(parts: list[keras.layers.Layer], name: str, shape: tuple[int, int]) -> keras.layers.Layer:
    first, last = parts[0], parts[-1]
    dtype = first.dtype_policy
    if is_lstm(last):
        return keras.layers.LSTM(last.units, **lstm_arguments(last), name=name, dtype=dtype)
    if hasattr(first, "mask_zero"):  # an embedding table, blended, spliced or a factor pair
        return keras.layers.Embedding(shape[0], shape[1], mask_zero=first.mask_zero, name=name, dtype=dtype)
    if hasattr(first, "filters"):
        return keras.layers.Conv2D(last.filters, first.kernel_size, **_conv_geometry(first),
                                   activation=last.activation, use_bias=last.use_bias, name=name, dtype=dtype)
    return keras.layers.Dense(last.units, activation=last.activation, use_bias=last.use_bias, name=name,
                              dtype=dtype)


def densify(model: keras.Model, name: str) -> keras.Model:
    """Replace the compressed layer ``name`` (blending, or spliced into one or two layers) by a plain
    Dense/Embedding/Conv2D/LSTM of the same name whose kernel is the matrix it computes with now (an LSTM
    also keeps its recurrent kernel and bias).

    Raises:
        ValueError: no compressed layer comes from ``name``.
    """
    _check_model(model, "densify")
    parts = _parts(model, name)
    if not parts:
        raise ValueError(f"model {model.name!r} has no compressed layer {name!r} to densify.")
    matrix = _matrix(parts)
    kept = lstm_weights(parts[-1])[1:] if is_lstm(parts[-1]) else (None, getattr(parts[-1], "bias", None))
    recurrent, bias = (None if w is None else ops.convert_to_numpy(w) for w in kept)
    plain = _plain(parts, name, matrix.shape)

    def init() -> None:
        if isinstance(plain, keras.layers.LSTM):
            target, plain_recurrent, plain_bias = lstm_weights(plain)
            plain_recurrent.assign(recurrent)
        else:
            target = plain.embeddings if isinstance(plain, keras.layers.Embedding) else plain.kernel
            plain_bias = getattr(plain, "bias", None)
        target.assign(matrix.reshape(tuple(target.shape)))
        if bias is not None:
            plain_bias.assign(bias)

    replace: dict[str, _Replacement] = {parts[0].name: _Replacement([plain], init)}
    for extra in parts[1:]:
        gone: list[Any] = [] if isinstance(model, keras.Sequential) else [keras.layers.Identity(name=extra.name)]
        replace[extra.name] = _Replacement(gone, lambda: None)
    return _rebuild(model, replace)
