"""Model surgery: `compress` wraps planned layers in blended layers; `strip` splices finished ones.

Both return a new model with every weight carried over; the input model is left untouched. Surgery
happens between `fit` calls: compile the result before training it.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import keras
from keras.src.models.functional import Functional  # the class of keras.Model(inputs, outputs)

import operators
from mutate.layers import (BlendedLayer, CompressedConv2D, CompressedDense, CompressedEmbedding, CompressedLSTM,
                           FactorConv2D, FactorDense, FactorEmbedding, FactorLSTM, SplicedConv2D, SplicedDense,
                           SplicedEmbedding, SplicedLSTM)
from mutate.layers._lstm import check_plain_lstm, lstm_arguments, lstm_weights
from mutate.schedule import Schedule

PlanValue = Union[operators.Compressor, str, tuple[str, Mapping[str, Any]]]
_SUPPORTED = "Dense, Embedding, Conv2D (groups=1) and LSTM (its input kernel)"


@dataclass
class _Replacement:
    layers: list[keras.layers.Layer]
    init: Callable[[], None]


def _clone(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.__class__.from_config(layer.get_config())


def _call_kwargs(layer: keras.layers.Layer, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A node's recorded call kwargs for ``layer`` (maybe a replacement with another ``call`` signature), less
    those its ``call`` does not take that carry nothing: a mask (Keras re-attaches it from the input tensor)
    or a None. ``training`` stays: Keras drops it for layers that do not take it."""
    params = inspect.signature(layer.call).parameters
    return {k: v for k, v in kwargs.items() if k in params or (k != "mask" and v is not None)}


def _rebuild(model: keras.Model, replace: dict[str, _Replacement]) -> keras.Model:
    """Clone ``model`` with the named top-level layers replaced, and copy every other layer's weights."""
    kept: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in replace:
            return replace[layer.name].layers[0]
        new = _clone(layer)
        if isinstance(layer, keras.layers.Layer):  # not a graph op, e.g. the ops.not_equal of an embedding mask
            kept.append((layer, new))
        return new

    followers = {id(r.layers[0]): r.layers[1:] for r in replace.values() if r.layers}

    def call_function(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        out = layer(*args, **_call_kwargs(layer, kwargs))
        for nxt in followers.get(id(layer), []):
            out = nxt(out)
        return out

    if isinstance(model, keras.Sequential):
        layers: list[keras.layers.Layer] = []
        for layer in model.layers:
            layers.extend(replace[layer.name].layers if layer.name in replace else [clone_function(layer)])
        inp = model.inputs[0]
        new = keras.Sequential([keras.Input(batch_shape=inp.shape, dtype=inp.dtype), *layers], name=model.name)
    else:
        new = keras.models.clone_model(model, clone_function=clone_function, call_function=call_function)
    for old, fresh in kept:
        fresh.set_weights(old.get_weights())
    for r in replace.values():
        r.init()
    return new


def _check_model(model: Any, what: str) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"mutate.{what} expects a keras.Model, but got {type(model).__name__}.")
    if isinstance(model, (keras.Sequential, Functional)):
        if not model.built or not model.inputs:
            raise ValueError(f"mutate.{what} needs a built model with known inputs; build or call it first "
                             f"(model {model.name!r} is not built).")
        return
    raise TypeError(f"mutate.{what} supports Sequential and Functional models, but got a subclassed "
                    f"{type(model).__name__}; rebuild it functionally.")


def matrix_shape(layer: keras.layers.Layer) -> tuple[int, int]:
    """(m, n) of a compressible layer's kernel viewed as a matrix.

    Raises:
        TypeError: the layer is not a Dense, Embedding, Conv2D (groups=1) or plain LSTM, or is already
            compressed. An LSTM is viewed as its input kernel (input_dim, 4*units).
    """
    if isinstance(layer, BlendedLayer):
        raise TypeError(f"layer {layer.name!r} is already being compressed ({layer.compressor.name}); strip it "
                        "first.")
    if isinstance(layer, keras.layers.Dense):
        if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
            raise TypeError(f"layer {layer.name!r} is quantized or has LoRA enabled; mutate compresses plain "
                            "Dense layers only.")
        return int(layer.kernel.shape[0]), int(layer.units)
    if isinstance(layer, keras.layers.Embedding):
        return int(layer.input_dim), int(layer.output_dim)
    if isinstance(layer, keras.layers.Conv2D) and getattr(layer, "groups", 1) == 1:
        kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
        return kh * kw * cin, cout
    if isinstance(layer, keras.layers.LSTM):
        check_plain_lstm(layer)
        return int(layer.cell.kernel.shape[0]), 4 * int(layer.units)
    raise TypeError(f"layer {layer.name!r} of type {type(layer).__name__} cannot be compressed; supported: "
                    f"{_SUPPORTED}.")


def _as_compressor(value: PlanValue, key: str) -> operators.Compressor:
    if isinstance(value, operators.Compressor):
        return operators.get(value)
    if isinstance(value, str):
        return operators.get(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], Mapping):
        return operators.get(value[0], **dict(value[1]))
    raise TypeError(f"plan[{key!r}] must be a Compressor, an operator name or (name, params), but got {value!r}.")


def resolve_plan(model: keras.Model, plan: Mapping[str, PlanValue]) -> dict[str, operators.Compressor]:
    """Map each layer name matched by a plan key (a name or a glob) to its compressor.

    Raises:
        ValueError: a key matches no layer, a layer is matched by two keys, or an operator's parameters do
            not fit the layer's shape (e.g. a rank above min(m, n)).
        TypeError: a matched layer cannot be compressed, or a plan value is malformed.
    """
    if not plan:
        raise ValueError("the compression plan is empty; map layer names or globs to operators.")
    names = [layer.name for layer in model.layers]
    resolved: dict[str, operators.Compressor] = {}
    for key, value in plan.items():
        matched = [n for n in names if fnmatch.fnmatchcase(n, key)]
        if not matched:
            raise ValueError(f"plan key {key!r} matches no layer of model {model.name!r}; layers are: "
                             f"{', '.join(names)}.")
        op = _as_compressor(value, key)
        for name in matched:
            if name in resolved:
                raise ValueError(f"layer {name!r} is matched by more than one plan key (last: {key!r}).")
            m, n = matrix_shape(model.get_layer(name))
            try:
                op.check(m, n)
            except ValueError as e:
                raise ValueError(f"layer {name!r} ({m}x{n}), operator {op.name!r}: {e}") from None
            resolved[name] = op
    return resolved


def _conv_geometry(layer: keras.layers.Layer) -> dict[str, Any]:
    """The stride, padding, data-format and dilation arguments of a (blended) Conv2D."""
    return {"strides": layer.strides, "padding": layer.padding, "data_format": layer.data_format,
            "dilation_rate": layer.dilation_rate}


def _blended_for(layer: keras.layers.Layer, op: operators.Compressor, schedule: Schedule, refresh: bool,
                 trainable_factors: Mapping[str, bool] | None) -> _Replacement:
    common = dict(operator=op.name, operator_params=op.get_config(), schedule=schedule, refresh=refresh,
                  trainable_factors=dict(trainable_factors or {}), name=layer.name, trainable=layer.trainable,
                  dtype=layer.dtype_policy)
    if isinstance(layer, keras.layers.Dense):
        new: BlendedLayer = CompressedDense(layer.units, activation=layer.activation, use_bias=layer.use_bias,
                                            **common)
    elif isinstance(layer, keras.layers.Embedding):
        new = CompressedEmbedding(layer.input_dim, layer.output_dim, mask_zero=layer.mask_zero, **common)
    elif isinstance(layer, keras.layers.LSTM):
        new = CompressedLSTM(layer.units, **lstm_arguments(layer), **common)
    else:
        new = CompressedConv2D(layer.filters, layer.kernel_size, **_conv_geometry(layer),
                               activation=layer.activation, use_bias=layer.use_bias, **common)

    def init() -> None:
        if isinstance(layer, keras.layers.LSTM):
            kernel, recurrent, bias = lstm_weights(layer)
            new.recurrent_kernel.assign(keras.ops.convert_to_numpy(recurrent))
        else:
            kernel = layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel
            bias = layer.bias if new.bias is not None else None
        new.kernel.assign(keras.ops.convert_to_numpy(kernel))
        if bias is not None:
            new.bias.assign(keras.ops.convert_to_numpy(bias))

    return _Replacement([new], init)


def compress(model: keras.Model, plan: Mapping[str, PlanValue], schedule: Schedule, *, refresh: bool = False,
             trainable_factors: Mapping[str, bool] | None = None) -> keras.Model:
    """Return a copy of ``model`` whose planned layers blend into their operator's factors.

    Works mid-training: every weight is carried over, untouched layers are identical copies, and layers
    already blending keep their state. Compile the result, then fit it with `CompressionCallback`.

    Args:
        model: a built Sequential or Functional model.
        plan: layer name or glob -> a Compressor, an operator name, or ``(name, params)``.
        schedule: the blend schedule; each compressed layer gets its own copy of the state.
        refresh: recompute factors from A at every update while alpha > 0.
        trainable_factors: per-factor trainability overrides, e.g. ``{"right": False}``.

    Raises:
        ValueError, TypeError: see `resolve_plan`; also a model that is not built or not Sequential/Functional.
    """
    _check_model(model, "compress")
    if not isinstance(schedule, Schedule):
        raise TypeError(f"`schedule` must be a mutate.Schedule, but got {schedule!r}.")
    resolved = resolve_plan(model, plan)
    replace = {name: _blended_for(model.get_layer(name), op, schedule, refresh, trainable_factors)
               for name, op in resolved.items()}
    return _rebuild(model, replace)


def _spliced_for(layer: BlendedLayer, force: bool) -> _Replacement:
    alpha = layer.current_alpha()
    factored = bool(int(keras.ops.convert_to_numpy(layer.factored)))
    if alpha != 0.0 or not factored:
        if not force:
            raise ValueError(
                f"layer {layer.name!r} is still blending (alpha={alpha:.4g} at its step {layer.current_step()}; "
                f"its schedule reaches alpha=0 at step {layer.schedule.final_step}): train on with "
                "CompressionCallback, or pass force=True to splice its current factors anyway.")
        if not factored:
            layer.refactor()
    op, (m, n) = layer.compressor, layer.matrix_shape()
    factors = layer.factor_values()
    origin = {"layer": layer.name, "operator": op.name, "params": op.get_config(), "shape": [m, n]}
    bias = None if layer.bias is None else keras.ops.convert_to_numpy(layer.bias)
    recurrent = keras.ops.convert_to_numpy(layer.recurrent_kernel) if isinstance(layer, CompressedLSTM) else None
    dtype = layer.dtype_policy
    if op.pair:
        k = factors["left"].shape[1]
        left_origin, right_origin = {**origin, "part": 0}, {**origin, "part": 1}
        if isinstance(layer, CompressedDense):
            first: keras.layers.Layer = FactorDense(k, use_bias=False, name=f"{layer.name}_left", origin=left_origin,
                                                    dtype=dtype)
            second = FactorDense(layer.units, activation=layer.activation, use_bias=layer.use_bias,
                                 name=f"{layer.name}_right", origin=right_origin, dtype=dtype)
            left, right = factors["left"], factors["right"]
        elif isinstance(layer, CompressedEmbedding):
            first = FactorEmbedding(layer.input_dim, k, mask_zero=layer.mask_zero, name=f"{layer.name}_left",
                                    origin=left_origin, dtype=dtype)
            second = FactorDense(layer.output_dim, use_bias=False, name=f"{layer.name}_right", origin=right_origin,
                                 dtype=dtype)
            left, right = factors["left"], factors["right"]
        elif isinstance(layer, CompressedLSTM):  # x @ left, then an LSTM whose input kernel is right
            first = FactorDense(k, use_bias=False, name=f"{layer.name}_left", origin=left_origin, dtype=dtype)
            second = FactorLSTM(layer.units, **lstm_arguments(layer), name=f"{layer.name}_right",
                                origin=right_origin, dtype=dtype)
            left, right = factors["left"], factors["right"]
        else:
            kh, kw = layer.kernel_size
            first = FactorConv2D(k, layer.kernel_size, **_conv_geometry(layer), use_bias=False,
                                 name=f"{layer.name}_left", origin=left_origin, dtype=dtype)
            second = FactorConv2D(layer.filters, (1, 1), data_format=layer.data_format, activation=layer.activation,
                                  use_bias=layer.use_bias, name=f"{layer.name}_right", origin=right_origin,
                                  dtype=dtype)
            left = factors["left"].reshape(kh, kw, m // (kh * kw), k)
            right = factors["right"].reshape(1, 1, k, n)

        def init_pair() -> None:
            (first.embeddings if isinstance(first, keras.layers.Embedding) else first.kernel).assign(left)
            if isinstance(second, FactorLSTM):
                _, second_recurrent, second_bias = lstm_weights(second)
                second.cell.kernel.assign(right)
                second_recurrent.assign(recurrent)
            else:
                second.kernel.assign(right)
                second_bias = second.bias
            if bias is not None:
                second_bias.assign(bias)

        return _Replacement([first, second], init_pair)

    common = dict(operator=op.name, operator_params=op.get_config(), matrix_shape=(m, n), origin=origin,
                  name=layer.name, dtype=dtype)
    if isinstance(layer, CompressedDense):
        single: keras.layers.Layer = SplicedDense(layer.units, activation=layer.activation,
                                                  use_bias=layer.use_bias, **common)
    elif isinstance(layer, CompressedEmbedding):
        single = SplicedEmbedding(mask_zero=layer.mask_zero, **common)
    elif isinstance(layer, CompressedLSTM):
        single = SplicedLSTM(layer.units, **lstm_arguments(layer), **common)
    else:
        single = SplicedConv2D(layer.filters, layer.kernel_size, **_conv_geometry(layer),
                               activation=layer.activation, use_bias=layer.use_bias, **common)
    packed = op.pack(factors)

    def init_single() -> None:
        single.assign_packed(packed)
        if recurrent is not None:
            single.recurrent_kernel.assign(recurrent)
        if bias is not None:
            single.bias.assign(bias)

    return _Replacement([single], init_single)


def strip(model: keras.Model, *, force: bool = False, finished_only: bool = False) -> keras.Model:
    """Splice every blended layer whose alpha reached 0 into its factored layers; A is not kept.

    Low-rank layers become two standard layers (Dense m->k without bias, then Dense k->n with the original
    bias and activation; Conv2D kxk to k channels then 1x1; Embedding to k then Dense; LSTM: Dense m->k, then
    an LSTM whose input kernel is k x 4*units, with the recurrent kernel and bias). Other operators
    become one ``Spliced*`` layer that stores only their packed arrays. Predictions equal the blended model's
    at alpha=0.

    Args:
        model: a model returned by `compress` (and trained).
        force: splice layers still blending too, from their current factors (predictions then change).
        finished_only: leave layers still blending as they are instead of raising; returns ``model``
            itself when no layer is finished.

    Raises:
        ValueError: a layer is still blending and neither ``force`` nor ``finished_only`` is set.
    """
    _check_model(model, "strip")
    blended = [layer for layer in model.layers if isinstance(layer, BlendedLayer)]
    if finished_only and not force:
        blended = [layer for layer in blended if layer.current_alpha() == 0.0
                   and bool(int(keras.ops.convert_to_numpy(layer.factored)))]
        if not blended:
            return model
    replace = {layer.name: _spliced_for(layer, force) for layer in blended}
    return _rebuild(model, replace)
