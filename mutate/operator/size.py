"""`model_size`: parameters and the bits a model really stores, per layer, against its dense equivalent."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from mutate.operator.host import states
from mutate.operator.state import KernelState
from mutate.operator.surgery import relative_path, walk
from operators import dtype_bits


@dataclass(frozen=True)
class LayerSize:
    """Size of one layer (or of the pair of layers that replaced one).

    Attributes:
        name: the layer name (for a spliced pair, the name of the layer it replaced).
        state: ``"dense"``, ``"blending"`` or ``"spliced"``.
        params: stored elements.
        bits: bits stored now (a blending layer stores A, its factors and its schedule state).
        dense_bits: bits of the uncompressed layer: each weight at its dtype's width (32 for float32).
        final_bits: bits once spliced (equal to ``bits`` unless the layer is blending).
    """

    name: str
    state: str
    params: int
    bits: int
    dense_bits: int
    final_bits: int


@dataclass(frozen=True)
class ModelSize:
    """Per-layer sizes and totals. ``ratio`` = dense bits / stored bits (above 1 means smaller)."""

    layers: tuple[LayerSize, ...]

    @property
    def params(self) -> int:
        return sum(s.params for s in self.layers)

    @property
    def bits(self) -> int:
        return sum(s.bits for s in self.layers)

    @property
    def dense_bits(self) -> int:
        return sum(s.dense_bits for s in self.layers)

    @property
    def final_bits(self) -> int:
        return sum(s.final_bits for s in self.layers)

    @property
    def ratio(self) -> float:
        return self.dense_bits / max(self.bits, 1)

    @property
    def final_ratio(self) -> float:
        return self.dense_bits / max(self.final_bits, 1)

    def __str__(self) -> str:
        rows = [f"{'layer':<24}{'state':<10}{'params':>10}{'bits':>12}{'dense bits':>12}{'final bits':>12}"]
        rows += [f"{s.name:<24}{s.state:<10}{s.params:>10}{s.bits:>12}{s.dense_bits:>12}{s.final_bits:>12}"
                 for s in self.layers]
        rows.append(f"{'total':<34}{self.params:>10}{self.bits:>12}{self.dense_bits:>12}{self.final_bits:>12}")
        rows.append(f"ratio {self.ratio:.2f}x stored now, {self.final_ratio:.2f}x once spliced")
        return "\n".join(rows)


def _bits(variables: list) -> int:
    return int(sum(int(np.prod(v.shape)) * dtype_bits(v.dtype) for v in variables))


def _count(variables: list) -> int:
    return int(sum(int(np.prod(v.shape)) for v in variables))


def _own(layer: keras.layers.Layer) -> list:
    """The variables ``layer`` itself holds (not its sublayers'), less a spliced kernel's decoded copies of its
    packed arrays (`KernelState._build_packed`: held for speed, never stored)."""
    if isinstance(layer, KernelState):
        return layer.stored_weights
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def _group(model: keras.Model) -> list[tuple[keras.layers.Layer, list]]:
    """(layer, the variables it accounts for) for every layer holding variables: a compressible layer also
    accounts for its RNN cell's and its KernelStates' variables."""
    owner: dict[int, keras.layers.Layer] = {}
    groups: dict[int, tuple[keras.layers.Layer, list]] = {}
    for layer, parent in walk(model):
        folded = parent is not None and (isinstance(layer, KernelState) or getattr(parent, "cell", None) is layer)
        owner[id(layer)] = owner[id(parent)] if folded else layer
        target = owner[id(layer)]
        own = _own(layer)
        if own:
            groups.setdefault(id(target), (target, []))[1].extend(own)
    return list(groups.values())


def model_size(model: keras.Model) -> ModelSize:
    """Size of ``model``: per-layer and total parameters and stored bits, and the ratio to dense.

    Dense float32 weights count 32 bits each; every stored array counts elements times its dtype width
    (a pruning bitmask counts its bytes, k-means codes their integer type). Optimizer state is not counted.
    A compressed layer's dense bits are its kernels' width (the layer's variable dtype: 32 bits in float32
    and under mixed precision, 16 for a float16 or bfloat16 layer) per element of each compressed kernel plus
    its other weights (bias; an LSTM's recurrent kernel when only its input kernel is compressed): the bits
    of the plain layer. Factors are stored in float32 whatever the layer's dtype, so a spliced float16 layer
    can store more bits than its plain one (its ratio is then below 1).
    A stack that ends in ``huffman`` counts its entropy-coded bits (`operators.stack`), although the layer
    holds its arrays before coding. Rows are named by the layer's path in the model.
    """
    sizes: list[LayerSize] = []
    for layer, variables in _group(model):
        name = relative_path(model, layer)
        pairs = states(layer)
        if not pairs:
            bits = _bits(variables)
            sizes.append(LayerSize(name, "dense", _count(variables), bits, bits, bits))
            continue
        state_vars = {id(v) for _, st in pairs for v in st.weights}
        a_vars = {id(s.variable(layer)) for s, st in pairs if not st.spliced}
        kept = [v for v in variables if id(v) not in state_vars and id(v) not in a_vars]
        dense = final = saved = 0
        kernel_bits = dtype_bits(layer.dtype_policy.variable_dtype)  # the plain kernel's width
        for _, st in pairs:
            m, n = st.matrix_shape()
            dense += kernel_bits * m * n
            if st.spliced:
                raw = _bits(list(st.packed.values()))
                coded = st.compressor.size_bits(st.factor_values()) if st.compressor.entropy_coded else raw
                final += coded
                saved += raw - coded
            elif st.is_factored():
                final += st.compressor.size_bits(st.factor_values())
            else:
                final += sum(int(np.prod(s.shape)) * dtype_bits(s.dtype)
                             for s in st.compressor.packed_specs(m, n).values())
        status = "spliced" if all(st.spliced for _, st in pairs) else "blending"
        bits = _bits(variables) - saved
        sizes.append(LayerSize(name, status, _count(variables), bits, dense + _bits(kept), final + _bits(kept)))
    return ModelSize(tuple(sizes))
