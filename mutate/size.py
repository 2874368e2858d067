"""`model_size`: parameters and the bits a model really stores, per layer, against its dense equivalent."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from mutate.callbacks import iter_layers
from mutate.layers import BlendedLayer
from operators import dtype_bits


@dataclass(frozen=True)
class LayerSize:
    """Size of one layer (or of the pair of layers that replaced one).

    Attributes:
        name: the layer name (for a spliced pair, the name of the layer it replaced).
        state: ``"dense"``, ``"blending"`` or ``"spliced"``.
        params: stored elements.
        bits: bits stored now (a blending layer stores A, its factors and its schedule state).
        dense_bits: bits of the uncompressed layer: 32 per float32 weight.
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


def _kept(layer: keras.layers.Layer) -> list:
    """The weights a compressed layer keeps uncompressed: its bias, and an LSTM's recurrent kernel too."""
    kept = getattr(layer, "kept_weights", None)
    if kept is not None:
        return list(kept())
    return [layer.bias] if getattr(layer, "bias", None) is not None else []


def model_size(model: keras.Model) -> ModelSize:
    """Size of ``model``: per-layer and total parameters and stored bits, and the ratio to dense.

    Dense float32 weights count 32 bits each; every stored array counts elements times its dtype width
    (a pruning bitmask counts its bytes, k-means codes their integer type). Optimizer state is not counted.
    A compressed layer's dense bits are 32 per element of its matrix plus its uncompressed weights (bias; an
    LSTM's recurrent kernel and bias), i.e. the bits of the layer it replaces.
    """
    sizes: list[LayerSize | str] = []  # a str holds the place of a spliced group, filled in below
    spliced: dict[str, list[keras.layers.Layer]] = {}
    for layer in iter_layers(model):
        if not layer.weights:
            continue
        origin = getattr(layer, "origin", None)
        if origin:
            if origin["layer"] not in spliced:
                sizes.append(origin["layer"])
            spliced.setdefault(origin["layer"], []).append(layer)
        elif isinstance(layer, BlendedLayer):
            m, n = layer.matrix_shape()
            kept = _kept(layer)
            op = layer.compressor
            if int(keras.ops.convert_to_numpy(layer.factored)):
                final = op.size_bits(layer.factor_values())
            else:
                final = sum(int(np.prod(s.shape)) * dtype_bits(s.dtype) for s in op.packed_specs(m, n).values())
            sizes.append(LayerSize(layer.name, "blending", _count(layer.weights), _bits(layer.weights),
                                   32 * m * n + _bits(kept), final + _bits(kept)))
        else:
            bits = _bits(layer.weights)
            sizes.append(LayerSize(layer.name, "dense", _count(layer.weights), bits, bits, bits))
    for name, parts in spliced.items():
        m, n = parts[0].origin["shape"]
        weights = [w for p in parts for w in p.weights]
        kept = [w for p in parts for w in _kept(p)]
        bits = _bits(weights)
        sizes[sizes.index(name)] = LayerSize(name, "spliced", _count(weights), bits, 32 * m * n + _bits(kept), bits)
    return ModelSize(tuple(s for s in sizes if isinstance(s, LayerSize)))
