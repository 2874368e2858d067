"""Export tracing: while `exporting` is on, spliced kernels hide their stored arrays from the converter's
constant folding behind a run-time zero (`anchor`), so a LiteRT file keeps them packed
(`opaque`, used by `mutate.operator.state.KernelState.factor_tensors`; `mutate.results.formats`)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import keras
from keras import ops

_EXPORTING = [False]


@contextlib.contextmanager
def exporting() -> Any:
    """While tracing for an export: spliced integer arrays stay packed in the graph (`KernelState.factor_tensors`)."""
    _EXPORTING[0] = True
    try:
        yield
    finally:
        _EXPORTING[0] = False


def anchor(args: tuple) -> Any:
    """A zero the converter cannot fold (int(|first input element| < 0)), or None when not exporting."""
    if not _EXPORTING[0] or not args:
        return None
    first = args[0]
    while isinstance(first, (list, tuple)):
        first = first[0]
    if isinstance(first, dict):
        first = next(iter(first.values()))
    # |first input element| < 0: false, but no converter proves it (x * 0 and the batch size both get folded)
    probe = ops.reshape(first, (-1,))[:1]
    return ops.cast(ops.any(ops.abs(ops.cast(probe, "float32")) < 0.0), "int32")


def opaque(tensor: Any, anchor: Any) -> Any:
    """``tensor`` itself, gathered at ``range(anchor, anchor + size)`` with ``anchor`` a run-time zero the
    converter cannot fold: RANGE and GATHER are builtin LiteRT ops that take these arrays' uint8 at run time.
    (Tried: a reshape to a run-time shape and a full-size slice from a run-time start are folded, the
    element count fixing them; a select or a maximum on uint8 needs the Flex runtime.)"""
    if keras.backend.backend() == "jax":
        # JAX needs concrete range bounds; its SavedModel (jax2tf) keeps the weights as variables and passes
        # no converter that folds constants, so the packed arrays stay packed without the anchor
        return tensor
    size = int(np.prod(tensor.shape))
    flat = ops.take(ops.reshape(tensor, (size,)), ops.arange(anchor, anchor + size), axis=0)
    return ops.reshape(flat, tuple(int(d) for d in tensor.shape))
