"""Stacks: several operators on one matrix, each compressing a float factor that the previous one left.

``Stack(stages=[("pruning", {"sparsity": 0.92}), ("kmeans", {"k": 64}), ("huffman", {})])`` prunes A, quantizes
the kept values with k-means (the mask unchanged) and entropy-codes the integer arrays: Deep Compression's three
stages (Han, Mao, Dally, ICLR 2016) as one operator. Any stage whose operator declares `Compressor.stack_inputs`
(pruning's kept ``values``, low-rank's and NMF's ``left``/``right``, random projection's ``right``, dictionary's
``values``) may be followed by any operator that can factor those arrays: each input gets its own copy of the
rest of the stack (``low_rank -> kmeans`` quantizes both factors, with a codebook each). A 1-D input (pruning's
kept values) is seen as a (len, 1) matrix.

``huffman``, allowed only last, changes nothing in the product: `size_bits` then counts each integer stream
(codes, indices, masks) with the cheapest of a few lossless encodings (`operators.huffman.encode_stream`:
canonical Huffman, Huffman-coded bytes, relative indices), tag and tables included. A saved model stores the
coded streams (`Stack.encode`; `mutate.operator.state.KernelState.save_own_variables`) and decodes them when
loaded; in memory and in a .tflite file the layer holds the packed arrays before entropy coding (a LiteRT
graph has no builtin op to decode Huffman).

Names: a stack's factors are the first stage's (less its inputs) plus, for each input ``X``, the rest's factors
as ``X__name``. Combined registry names such as ``"pruning+kmeans"`` with the stages' parameters mixed
(``sparsity=0.92, k=64``; ``kmeans.k=64`` when a name is ambiguous) build a Stack too (`from_name`), which is
how YAML spaces list stacks.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import numpy as np

from operators._base import Compressor, FactorSpec, Factors, array_bits, plain
from operators._registry import get, register

SEP = "__"
"""Joins a stack input's name and the name of a factor the rest of the stack keeps for it."""
ENTROPY = "huffman"
"""The name of the lossless last stage."""


def _stage(value: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        return value, {}
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str) \
            and isinstance(value[1], Mapping):
        return value[0], dict(value[1])
    raise TypeError(f"a stack stage must be an operator name or (name, params), but got {value!r}.")


@register("stack")
class Stack(Compressor):
    """Operators applied in turn, each to the float factors of the one before (see the module docstring).

    Args:
        stages: a list of operator names or (name, params) pairs, first stage first; ``"huffman"`` may end it.
    """

    def __init__(self, stages: Sequence[Any] = ()) -> None:
        self.stages = [list(_stage(s)) for s in stages]
        self._built: tuple[Compressor, Compressor | None, bool] | None = None

    # -- structure ---------------------------------------------------------------------------------------------
    def label(self) -> str:
        """``"pruning+kmeans+huffman"``."""
        return "+".join(n for n, _ in self.stages)

    def parts(self) -> tuple[Compressor, Compressor | None, bool]:
        """(first stage, the rest of the stack or None, entropy-coded?)."""
        if self._built is None:
            names = [n for n, _ in self.stages]
            if ENTROPY in names[:-1]:
                raise ValueError(f"stack {self.label()}: {ENTROPY} must be the last stage.")
            coded = [p for n, p in self.stages if n == ENTROPY and p]
            if coded:  # they were kept in the config and ignored
                raise TypeError(f"stack {self.label()}: stage {ENTROPY} takes no parameter {sorted(coded[0])[0]!r} "
                                "(it takes none).")
            if "stack" in names:
                raise ValueError(f"stack {self.label()}: a stage cannot itself be a stack; list its stages.")
            ops = [get(n, **p) for n, p in self.stages if n != ENTROPY]
            entropy = bool(names) and names[-1] == ENTROPY
            if not ops or (len(ops) == 1 and not entropy):
                raise ValueError(f"stack {self.label() or '[]'}: a stack needs two stages or more (the last may be "
                                 f"{ENTROPY!r}).")
            for before, after in zip(ops, ops[1:]):
                if not before.stack_inputs:
                    raise ValueError(f"stack {self.label()}: {after.name} cannot follow {before.name}: {before.name} "
                                     f"leaves no float factor for another stage (stages that can be followed: "
                                     f"{', '.join(stackable())}).")
            if len(ops) == 1:
                rest = None
            elif len(ops) == 2:
                rest = ops[1]
            else:
                rest = Stack([s for s in self.stages[1:] if s[0] != ENTROPY])
            self._built = (ops[0], rest, entropy)
        return self._built

    def input_shapes(self, m: int, n: int) -> dict[str, tuple[int, int]]:
        """The matrix each stack input of the first stage is to the rest: 2-D as is, 1-D as (len, 1)."""
        first, rest, _ = self.parts()
        if rest is None:
            return {}
        specs = first.stack_specs(m, n)
        return {x: (specs[x].shape + (1,))[:2] if len(specs[x].shape) == 1 else tuple(specs[x].shape)  # type: ignore[misc]
                for x in first.stack_inputs}

    def _joined(self, m: int, n: int, mine: Mapping[str, Any], of_rest: Any) -> dict[str, Any]:
        """The first stage's entries ``mine`` less its stack inputs, then for each input ``x`` the entries
        ``of_rest(rest, x, shape)`` as ``x__name`` (a stack's specs, packed specs and factors are all built so)."""
        first, rest, _ = self.parts()
        out = {k: v for k, v in mine.items() if k not in first.stack_inputs}
        for x, shape in self.input_shapes(m, n).items():
            out.update({f"{x}{SEP}{k}": v for k, v in of_rest(rest, x, shape).items()})
        return out

    @staticmethod
    def _sub(factors: Mapping[str, Any], x: str) -> dict[str, Any]:
        head = x + SEP
        return {k[len(head):]: v for k, v in factors.items() if k.startswith(head)}

    # -- Compressor --------------------------------------------------------------------------------------------
    def check(self, m: int | None = None, n: int | None = None) -> None:
        first, rest, _ = self.parts()
        if m is None or n is None:
            return
        first.check(m, n)
        if rest is None:
            return
        packed = first.packed_specs(m, n)
        for x, (rows, cols) in self.input_shapes(m, n).items():
            if x not in packed or packed[x].shape != first.stack_specs(m, n)[x].shape:
                raise AssertionError(f"{first.name}: stack input {x!r} is not stored as it is")
            try:
                rest.check(rows, cols)
            except ValueError as e:
                raise ValueError(f"stack {self.label()}: {_label(rest)} cannot compress {first.name}'s {x} "
                                 f"({rows}x{cols}): {e}") from None

    @property
    def uses_saliency(self) -> bool:  # type: ignore[override]
        return self.parts()[0].uses_saliency

    @property
    def saliency_decay(self) -> float:  # type: ignore[override]
        return self.parts()[0].saliency_decay

    @property
    def refreshable(self) -> bool:  # type: ignore[override]
        first, rest, _ = self.parts()
        return first.refreshable and (rest is None or rest.refreshable)

    @property
    def entropy_coded(self) -> bool:  # type: ignore[override]
        return self.parts()[2]

    @property
    def generated(self) -> tuple[str, ...]:  # type: ignore[override]
        first, rest, _ = self.parts()
        inner = () if rest is None else tuple(f"{x}{SEP}{g}" for x in first.stack_inputs for g in rest.generated)
        return tuple(first.generated) + inner

    def generate(self, name: str, m: int, n: int) -> np.ndarray:
        first, rest, _ = self.parts()
        if name in first.generated:
            return first.generate(name, m, n)
        x, _, sub = name.partition(SEP)
        assert rest is not None
        return rest.generate(sub, *self.input_shapes(m, n)[x])

    def generate_tensor(self, name: str, m: int, n: int, start: Any) -> Any:
        first, rest, _ = self.parts()
        if name in first.generated:
            return first.generate_tensor(name, m, n, start)
        x, _, sub = name.partition(SEP)
        assert rest is not None
        return rest.generate_tensor(sub, *self.input_shapes(m, n)[x], start)

    def specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        first, rest, _ = self.parts()
        if rest is None:
            return first.specs(m, n)
        return self._joined(m, n, first.stack_specs(m, n), lambda r, x, shape: r.specs(*shape))

    def _factor(self, a: np.ndarray, saliency: np.ndarray | None = None) -> Factors:
        first, rest, _ = self.parts()
        if rest is None:
            return first.factor(a, saliency=saliency)
        m, n = a.shape
        mine = first.to_stack(first.factor(a, saliency=saliency))
        return self._joined(m, n, mine, lambda r, x, shape: r.factor(np.asarray(mine[x], np.float32).reshape(shape)))

    def product(self, factors: Mapping[str, Any]) -> Any:
        first, rest, _ = self.parts()
        if rest is None:
            return first.product(factors)
        mine = {k: v for k, v in factors.items() if SEP not in k}
        for x in first.stack_inputs:  # a vector input comes back as a (len, 1) matrix; its stage flattens it
            mine[x] = rest.product(self._sub(factors, x))
        return first.stack_product(mine)

    def packed_specs(self, m: int, n: int) -> dict[str, FactorSpec]:
        first, rest, _ = self.parts()
        if rest is None:
            return first.packed_specs(m, n)
        return self._joined(m, n, first.packed_specs(m, n), lambda r, x, shape: r.packed_specs(*shape))

    def pack(self, factors: Factors) -> Factors:
        first, rest, _ = self.parts()
        if rest is None:
            return first.pack(factors)
        out = first.stack_pack({k: v for k, v in factors.items() if SEP not in k and k not in self.generated})
        if rest is not None:
            for x in first.stack_inputs:
                sub = {k: v for k, v in self._sub(factors, x).items() if k not in rest.generated}
                out.update({f"{x}{SEP}{k}": v for k, v in rest.pack(sub).items()})
        return out

    def unpack(self, packed: Mapping[str, Any], m: int, n: int) -> dict[str, Any]:
        first, rest, _ = self.parts()
        if rest is None:
            return first.unpack(packed, m, n)
        mine = first.stack_unpack({k: v for k, v in packed.items() if SEP not in k}, m, n)
        return self._joined(m, n, mine, lambda r, x, shape: r.unpack(self._sub(packed, x), *shape))

    def streams(self, factors: Factors) -> dict[str, tuple[np.ndarray, int]]:
        first, rest, _ = self.parts()
        out = dict(first.streams({k: v for k, v in factors.items() if SEP not in k}))
        if rest is not None:
            for x in first.stack_inputs:
                out.update({f"{x}{SEP}{k}": v for k, v in rest.streams(self._sub(factors, x)).items()})
        return out

    def size_bits(self, factors: Factors) -> int:
        """Bits stored: the packed arrays, with every integer stream entropy-coded when the stack ends in
        ``huffman`` (tags, tables and counts included)."""
        packed = self.pack(factors)
        if not self.parts()[2]:
            return array_bits(packed)
        coded = self.encode(factors)
        return array_bits({k: v for k, v in packed.items() if k not in coded}) + \
            sum(int(c["bits"]) for c in coded.values())  # type: ignore[call-overload]

    # -- entropy coding ----------------------------------------------------------------------------------------
    def encode(self, factors: Factors) -> dict[str, dict[str, object]]:
        """Packed name -> its coded stream (`operators.huffman.encode_stream`), for every integer stream."""
        from operators.huffman import encode_stream

        return {k: encode_stream(symbols, alphabet) for k, (symbols, alphabet) in self.streams(factors).items()}

    def decode(self, coded: Mapping[str, dict[str, object]], factors: Factors) -> Factors:
        """The packed arrays that ``coded`` stores (the streams' sizes and alphabets read from ``factors``)."""
        from operators._bits import code_bits, pack_codes
        from operators.huffman import decode_stream

        streams = self.streams(factors)
        return {k: pack_codes(decode_stream(c, np.asarray(streams[k][0]).size, streams[k][1]),
                              code_bits(streams[k][1])) for k, c in coded.items()}

    def get_config(self) -> dict[str, Any]:
        return {"stages": [[n, plain(dict(p))] for n, p in self.stages]}


def _label(op: Compressor) -> str:
    return op.label() if isinstance(op, Stack) else op.name


def stackable() -> list[str]:
    """Registered operators that another stage may follow."""
    from operators._registry import _REGISTRY, available

    return [n for n in available() if _REGISTRY[n].stack_inputs]


def _takes_any(stage: str) -> bool:
    """Whether ``stage``'s operator takes ``**kwargs`` (a user's operator may)."""
    from operators._registry import _REGISTRY

    if stage == ENTROPY:
        return False
    return any(q.kind is inspect.Parameter.VAR_KEYWORD
               for q in inspect.signature(_REGISTRY[stage].__init__).parameters.values())


def from_name(name: str, params: Mapping[str, Any]) -> Stack:
    """``"pruning+kmeans"`` with ``{"sparsity": 0.92, "k": 64}`` -> the Stack of those stages.

    A parameter goes to the one stage whose operator takes it; ``stage.param`` (``"kmeans.seed"``) names the
    stage when several take it.

    Raises:
        ValueError: an unknown stage name, or a parameter that no stage (or more than one) takes.
    """
    from operators._registry import _REGISTRY, available

    names = name.split("+")
    for n in names:
        if n != ENTROPY and n not in _REGISTRY:
            raise ValueError(f"stack {name!r}: unknown operator {n!r}; available: {', '.join(available())}.")
    if len(set(names)) != len(names):
        raise ValueError(f"stack {name!r}: a stage appears twice.")
    takes = {n: set(inspect.signature(_REGISTRY[n].__init__).parameters) - {"self"} if n != ENTROPY else set()
             for n in names}
    per: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in params.items():
        stage, dot, p = key.rpartition(".")
        if dot:
            if stage not in per:
                raise TypeError(f"stack {name!r}: {key!r} names no stage of the stack.")
            if p not in takes[stage] and not _takes_any(stage):
                raise TypeError(f"stack {name!r}: {key!r}: stage {stage} takes no parameter {p!r}"
                                + (" (it takes none)" if not takes[stage] else "") + ".")
            if p in per[stage]:
                raise TypeError(f"stack {name!r}: {stage}.{p} is given twice ({p} and {key}).")
            per[stage][p] = value
            continue
        owners = [n for n in names if key in takes[n]]
        if len(owners) != 1:
            why = "no stage takes it" if not owners else f"write {owners[0]}.{key} (stages {', '.join(owners)} take it)"
            raise TypeError(f"stack {name!r}: parameter {key!r}: {why}.")
        if key in per[owners[0]]:
            raise TypeError(f"stack {name!r}: {owners[0]}.{key} is given twice ({key} and {owners[0]}.{key}).")
        per[owners[0]][key] = value
    return Stack([(n, per[n]) for n in names])
