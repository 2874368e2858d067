"""Bit packing of small integer codes: NumPy to pack at splice time, Keras ops to unpack in the graph."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def code_bits(k: int) -> int:
    """Bits per code for ``k`` distinct codes: ceil(log2 k), at least 1."""
    return max(1, math.ceil(math.log2(k)))


def packed_bytes(count: int, bits: int) -> int:
    """Bytes that ``count`` codes of ``bits`` bits occupy once packed."""
    return -(-count * bits // 8)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative ints (any shape, each < 2**bits) into uint8, code after code, little-endian bits.

    Returns:
        uint8 array of shape (ceil(codes.size * bits / 8),).
    """
    flat = np.asarray(codes, np.int64).ravel()
    b = ((flat[:, None] >> np.arange(bits)) & 1).astype(bool).ravel()
    return np.packbits(b, bitorder="little")


class Decoded:
    """A packed integer array whose codes a spliced layer decoded once and holds, so that its calls skip the
    unpacking (`mutate.operator.state.KernelState`): `unpack_codes` returns ``codes`` as they are. With
    ``codes`` None it decodes ``packed`` and keeps the codes and their width, which is how the layer learns
    what to hold."""

    def __init__(self, packed: Any, codes: Any = None, extra: dict[str, Any] | None = None) -> None:
        self.packed, self.codes, self.bits = packed, codes, 0
        self.extra: dict[str, Any] = dict(extra or {})

    def held(self, name: str, compute: Any) -> Any:
        """An array derived from the codes alone (a mask's kept positions), held with them: ``compute()``
        (NumPy, run eagerly when the layer decodes, and of the same shape for any codes) the first time."""
        if name not in self.extra:
            self.extra[name] = compute()
        return self.extra[name]


def unpack_codes(packed: Any, count: int, bits: int) -> Any:
    """Inverse of `pack_codes` in Keras ops: a uint8 tensor -> int32 tensor of shape (count,); a `Decoded`
    array gives its held codes.

    Bits are read with floor division and modulo by powers of two rather than shifts and masks: the
    values are non-negative, so both give the same codes, and TensorFlow Lite has builtin kernels for
    FLOOR_DIV and FLOOR_MOD but none for BitwiseAnd, which would force the Flex (Select TF ops) runtime.
    """
    from keras import ops

    if isinstance(packed, Decoded):
        if packed.codes is None:
            packed.codes, packed.bits = unpack_codes(packed.packed, count, bits), bits
        return packed.codes
    byte = ops.cast(packed, "int32")
    if 8 % bits == 0:  # 1, 2, 4 or 8 bits: codes never straddle a byte
        if bits == 8:
            return byte[:count]
        steps = ops.convert_to_tensor(np.left_shift(1, np.arange(0, 8, bits)).astype(np.int32))
        codes = ops.mod(ops.floor_divide(ops.expand_dims(byte, 1), steps), 1 << bits)
        return ops.reshape(codes, (-1,))[:count]
    steps = ops.convert_to_tensor(np.left_shift(1, np.arange(8)).astype(np.int32))
    allbits = ops.mod(ops.floor_divide(ops.expand_dims(byte, 1), steps), 2)
    allbits = ops.reshape(ops.reshape(allbits, (-1,))[: count * bits], (count, bits))
    weights = ops.convert_to_tensor(np.left_shift(1, np.arange(bits)).astype(np.int32))
    return ops.sum(allbits * weights, axis=1)
