"""Export tracing: while `exporting` is on, spliced kernels hide their stored arrays from the converter's
constant folding behind a run-time zero (`anchor`), so a LiteRT file keeps them packed
(`mutate.operator.state.opaque`, `mutate.results.formats`)."""

from __future__ import annotations

import contextlib
from typing import Any

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
