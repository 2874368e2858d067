"""Layer kinds: where each compressible kernel of a Keras layer lives and how it is viewed as an m x n matrix.

One `Kind` per family of Keras layers, in a registry (`kind_of`): no isinstance chains elsewhere. A kind
lists its `Slot`s (the kernels it holds: a Dense has one, an LSTM two, a SeparableConv2D two); a slot knows
the object holding the variable (the layer, or an RNN's cell), the attribute, and the `View` that turns the
kernel into the matrix the operators factor.

Views (kernel shape -> m x n):
- Dense (m, n): itself. Embedding (input_dim, output_dim): itself.
- EinsumDense: the kernel axes whose letters appear in the input term form m, the others n (in their
  order), e.g. a MultiHeadAttention query ``abc,cde->abde`` with kernel (hidden, heads, head_dim) is
  hidden x (heads*head_dim); its output projection ``abcd,cde->abe`` is (heads*head_dim) x hidden.
- Conv1D/2D/3D (k..., cin/groups, cout): (prod(k)*cin/groups) x cout. With groups > 1 the matrix holds
  every group's filters side by side (cout columns, each reading its own group's cin/groups channels); the
  operators factor it as one matrix, so a low-rank basis is shared across groups.
- Conv1D/2D/3DTranspose (k..., cout, cin): (prod(k)*cout) x cin, the last axis as for every convolution.
- DepthwiseConv1D/2D (k..., cin, multiplier): prod(k) x (cin*multiplier): every channel's spatial filter
  is a column, so low rank r means r spatial basis filters shared by all channels (r <= prod(k)).
- SeparableConv1D/2D: ``pointwise_kernel`` (its primary slot, (cin*multiplier) x cout) and
  ``depthwise_kernel`` (viewed as a depthwise kernel).
- LSTM and GRU: ``kernel`` (input_dim x gates*units, primary) and ``recurrent_kernel`` (units x
  gates*units), each held by the layer's cell and separately addressable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np


@dataclass(frozen=True)
class View:
    """A kernel of ``shape`` seen as an (m, n) matrix: axes ``perm[:split]`` form the rows, the rest the columns."""

    shape: tuple[int, ...]
    perm: tuple[int, ...]
    split: int

    @property
    def m(self) -> int:
        return int(math.prod(self.shape[a] for a in self.perm[:self.split]))

    @property
    def n(self) -> int:
        return int(math.prod(self.shape[a] for a in self.perm[self.split:]))

    @property
    def identity(self) -> bool:
        return self.perm == tuple(range(len(self.shape)))

    def to_matrix(self, kernel: np.ndarray) -> np.ndarray:
        """NumPy kernel -> (m, n)."""
        return np.transpose(np.asarray(kernel), self.perm).reshape(self.m, self.n)

    def matrix_tensor(self, kernel: Any) -> Any:
        """Kernel tensor (Keras ops) -> (m, n): `to_matrix` in the graph."""
        from keras import ops

        out = kernel if self.identity else ops.transpose(kernel, tuple(int(i) for i in self.perm))
        return ops.reshape(out, (self.m, self.n))

    def from_matrix(self, matrix: Any) -> Any:
        """(m, n) tensor (Keras ops) or array -> the kernel's shape."""
        from keras import ops

        permuted = tuple(self.shape[a] for a in self.perm)
        out = ops.reshape(matrix, permuted)
        return out if self.identity else ops.transpose(out, tuple(int(i) for i in np.argsort(self.perm)))


def _last_axis(shape: tuple[int, ...]) -> View:
    return View(shape, tuple(range(len(shape))), len(shape) - 1)


def _depthwise(shape: tuple[int, ...]) -> View:
    return View(shape, tuple(range(len(shape))), len(shape) - 2)


def _einsum(layer: keras.layers.Layer, shape: tuple[int, ...]) -> View:
    match = re.fullmatch(r"\s*([a-zA-Z.]+)\s*,\s*([a-zA-Z]+)\s*->\s*([a-zA-Z.]+)\s*", layer.equation)
    if not match or len(match.group(2)) != len(shape):
        return _last_axis(shape)
    inputs, kernel = match.group(1), match.group(2)
    rows = [i for i, c in enumerate(kernel) if c in inputs]
    cols = [i for i, c in enumerate(kernel) if c not in inputs]
    if not rows or not cols:
        return _last_axis(shape)
    return View(shape, tuple(rows + cols), len(rows))


@dataclass(frozen=True)
class Slot:
    """One compressible kernel of a layer kind.

    Attributes:
        name: how it is addressed and saved (``kernel``, ``recurrent_kernel``, ``pointwise_kernel``...).
        attr: the attribute of the holder that stores the variable (``_kernel`` for a Dense).
        in_cell: True when an RNN layer's ``cell`` holds it.
        view: kernel shape (and the layer) -> `View`.
    """

    name: str
    attr: str
    in_cell: bool = False
    view: Callable[[keras.layers.Layer, tuple[int, ...]], View] = lambda layer, shape: _last_axis(shape)

    def holder(self, layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.cell if self.in_cell else layer

    def variable(self, layer: keras.layers.Layer) -> Any:
        return getattr(self.holder(layer), self.attr, None)


@dataclass(frozen=True)
class Kind:
    """A family of layers: its slots (the first is the primary one, addressed by the layer's path alone)."""

    name: str
    classes: tuple[type, ...]
    slots: tuple[Slot, ...]
    fast: str = ""  # "dense" / "embedding": the layer's call is rewritten on factors; "" swaps kernels in

    def slot(self, name: str) -> Slot:
        for s in self.slots:
            if s.name == name:
                return s
        raise KeyError(name)


def _kinds() -> list[Kind]:
    L = keras.layers
    kernel = Slot("kernel", "_kernel")
    return [
        Kind("SeparableConv", (L.SeparableConv1D, L.SeparableConv2D),
             (Slot("pointwise_kernel", "pointwise_kernel"),
              Slot("depthwise_kernel", "depthwise_kernel", view=lambda layer, s: _depthwise(s)))),
        Kind("DepthwiseConv", (L.DepthwiseConv1D, L.DepthwiseConv2D),
             (Slot("kernel", "kernel", view=lambda layer, s: _depthwise(s)),)),
        Kind("ConvTranspose", (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose), (Slot("kernel", "kernel"),)),
        Kind("Conv", (L.Conv1D, L.Conv2D, L.Conv3D), (kernel,)),
        Kind("Dense", (L.Dense,), (kernel,), fast="dense"),
        Kind("EinsumDense", (L.EinsumDense,), (Slot("kernel", "_kernel", view=_einsum),)),
        Kind("Embedding", (L.Embedding,), (Slot("embeddings", "_embeddings"),), fast="embedding"),
        Kind("LSTM", (L.LSTM,), (Slot("kernel", "kernel", True), Slot("recurrent_kernel", "recurrent_kernel", True))),
        Kind("GRU", (L.GRU,), (Slot("kernel", "kernel", True), Slot("recurrent_kernel", "recurrent_kernel", True))),
    ]


_REGISTRY: list[Kind] = []


def kinds() -> list[Kind]:
    """Every registered layer kind, most specific first."""
    if not _REGISTRY:
        _REGISTRY.extend(_kinds())
    return _REGISTRY


def kind_of(layer: keras.layers.Layer) -> Kind | None:
    """The kind of ``layer`` (a subclass of a supported class counts), or None."""
    for kind in kinds():
        if isinstance(layer, kind.classes):
            return kind
    return None


SUPPORTED = ("Dense, EinsumDense (so MultiHeadAttention), Embedding, Conv1D/2D/3D, Conv1D/2D/3DTranspose, "
             "DepthwiseConv1D/2D, SeparableConv1D/2D and LSTM/GRU (kernel and recurrent_kernel)")


def view_of(layer: keras.layers.Layer, slot: Slot) -> View:
    """The matrix view of ``slot``'s kernel in ``layer`` (built)."""
    var = slot.variable(layer)
    shape = tuple(int(d) for d in var.shape)
    return slot.view(layer, shape)
