"""Dense and Embedding compute on the factors directly (no kernel is formed): a blending Dense is
``alpha * (x @ A) + (1 - alpha) * operator.matmul(x, factors)``, a spliced one ``operator.matmul`` alone (two
matmuls for low-rank); an Embedding gathers only the looked-up rows."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from mutate.operator.anchor import anchor
from mutate.operator.host import _value
from mutate.operator.kinds import Slot
from mutate.operator.state import KernelState


def _dense_call(layer: Any, pair: tuple[Slot, KernelState], inputs: Any, training: Any) -> Any:
    _, state = pair
    if state.spliced:
        factors = state.factor_tensors(anchor((inputs,)))
        x = ops.cast(state.compressor.matmul(inputs, factors), inputs.dtype)
    else:
        kernel = _value(layer._kernel)
        state.begin_call(training, kernel)  # first: a refresh in the step changes the factors this batch uses
        kernel = state.tap(kernel, training)
        x = state.blend(ops.matmul(inputs, kernel), state.compressor.matmul(inputs, state.factor_tensors()))
    if layer.bias is not None:
        x = ops.add(x, layer.bias)
    if layer.activation is not None:
        x = layer.activation(x)
    return x


def _embedding_call(layer: Any, pair: tuple[Slot, KernelState], inputs: Any, training: Any) -> Any:
    _, state = pair
    ids = inputs if inputs.dtype in ("int32", "int64") else ops.cast(inputs, "int32")
    if state.spliced:
        rows = state.compressor.gather(ids, state.factor_tensors(anchor((inputs,))))
    else:
        table = _value(layer._embeddings)
        state.begin_call(training, table)  # first, as in `_dense_call`
        table = state.tap(table, training)
        rows = state.blend(ops.take(table, ids, axis=0), state.compressor.gather(ids, state.factor_tensors()))
    return ops.cast(rows, layer.compute_dtype)


_FAST = {"dense": _dense_call, "embedding": _embedding_call}
_FAST_BASE = {"dense": keras.layers.Dense.call, "embedding": keras.layers.Embedding.call}


def fast_call(kind: str, base_call: Any, layer: Any, pair: tuple[Slot, KernelState], inputs: Any,
              training: Any) -> Any:
    """The layer's output on its factors, or None when its class overrides Keras' own call (then the generic
    kernel swap runs the user's call)."""
    if base_call is not _FAST_BASE[kind]:
        return None
    return _FAST[kind](layer, pair, inputs, training)
