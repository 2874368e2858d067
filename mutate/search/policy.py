"""The moves of a genome within a space (add, tighten, loosen, undo, switch), random draws and the uniform grid.
Pure Python, no TF, no Ray; `mutate.search.strategies` ranks and chooses among them."""

from __future__ import annotations

import fnmatch
import random
from typing import Any, Callable, Mapping, Sequence

from mutate.search.genome import Genome, Mutation, current

def check_operator(name: str, params: dict[str, Any]) -> None:
    """``operators.get(name, **params)``: raises ValueError/TypeError for unknown names or bad values (pure
    NumPy, so a space is checked without importing TensorFlow)."""
    import operators

    operators.get(name, **params)


# Moving along a parameter's sorted choices in this direction compresses more.
TIGHTER: dict[str, int] = {"rank": -1, "k": -1, "atoms": -1, "n_nonzero": -1, "sparsity": +1, "block_size": +1,
                           "ratio": +1}


def direction_of(param: str) -> int | None:
    """`TIGHTER`'s direction for ``param``, also when a stack names its stage (``"kmeans.k"``)."""
    return TIGHTER.get(param.rpartition(".")[2])


def targets(operators: Mapping[str, Mapping[str, Any]], layers: list[str],
            names: list[str] | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Kernel path -> operators allowed on it (the space's ``layers`` globs, narrowed per operator).

    Args:
        operators: the space's ``mutations.operators``; an operator's optional ``layers`` entry narrows it.
        layers: the space's ``mutations.layers`` globs.
        names: the model's compressible kernel paths, in order; or path -> every name a glob may match
            (the path, and the layer's name).
    """
    aliases = names if isinstance(names, Mapping) else {n: (n,) for n in names}

    def hit(path: str, globs: Sequence[str]) -> bool:  # as `mutate.operator.surgery.match`
        return any(path == g if g in aliases else any(a == g or fnmatch.fnmatchcase(a, g) for a in aliases[path])
                   for g in globs)

    out: dict[str, list[str]] = {}
    for name in aliases:
        if not hit(name, layers):
            continue
        ops = [op for op, params in operators.items() if not params.get("layers") or hit(name, params["layers"])]
        if ops:
            out[name] = ops
    return out


def choices(operators: Mapping[str, Mapping[str, Any]], op: str) -> dict[str, list[Any]]:
    """The parameter choices of ``op`` (without the ``layers`` narrowing key)."""
    return {p: list(v) for p, v in operators[op].items() if p != "layers"}


def draw(operators: Mapping[str, Mapping[str, Any]], allowed: Mapping[str, list[str]], rng: random.Random,
         exclude: set[str] = frozenset()) -> Mutation | None:  # type: ignore[assignment]
    """A random new mutation on a layer not in ``exclude``, or None when every layer is excluded."""
    free = [layer for layer in allowed if layer not in exclude]
    if not free:
        return None
    layer = rng.choice(free)
    op = rng.choice(allowed[layer])
    params = {p: rng.choice(vs) for p, vs in sorted(choices(operators, op).items())}
    return Mutation(layer, op, params)


def notches(operators: Mapping[str, Mapping[str, Any]], mutation: Mutation, direction: int) -> list[Mutation]:
    """Every level one notch away from ``mutation`` in one parameter: ``direction`` +1 compresses more
    (tighten), -1 less (loosen). Parameters with no known direction (not in `TIGHTER`) do not move."""
    out = []
    for p, vs in sorted(choices(operators, mutation.operator).items()):
        if direction_of(p) is None or p not in mutation.params:
            continue
        way = direction_of(p) * direction  # type: ignore[operator]
        beyond = [v for v in sorted(set(vs)) if (v - mutation.params[p]) * way > 0]
        if beyond:
            nearest = min(beyond, key=lambda v: abs(v - mutation.params[p]))
            out.append(Mutation(mutation.layer, mutation.operator, {**mutation.params, p: nearest}))
    return out


def levels(operators: Mapping[str, Mapping[str, Any]], op: str) -> list[dict[str, Any]]:
    """Every parameter combination of ``op`` in the space."""
    from mutate.search.table import grid

    return list(grid(choices(operators, op)))


MOVES = ("add", "tighten", "loosen", "undo", "switch", "stack")
"""The kinds of explore move: add a mutation on a dense layer; tighten or loosen one in force by a notch;
undo one (the layer goes back to dense: its current product becomes its kernel); switch a layer to another
operator (any level); stack a stage on a layer's operator (``pruning`` -> ``pruning+kmeans`` with the same
sparsity, when the space lists that stack: the layer's product is re-compressed by the longer stack)."""


def extends(stacked: str, params: Mapping[str, Any], m: Mutation) -> bool:
    """True when operator ``stacked`` with ``params`` is ``m``'s operator and level with stages added."""
    return stacked.startswith(m.operator + "+") and \
        all(params.get(p, params.get(f"{m.operator}.{p}")) == v for p, v in m.params.items())


def moves(operators: Mapping[str, Mapping[str, Any]], allowed: Mapping[str, list[str]],
          genome: Genome) -> list[tuple[str, Mutation]]:
    """Every move from ``genome``: (kind, the mutation to append). An undo appends ``Mutation(layer,
    "dense")``."""
    in_force = current(genome)
    out: list[tuple[str, Mutation]] = []
    for layer, ops in allowed.items():
        m = in_force.get(layer)
        if m is None:
            out += [("add", Mutation(layer, op, params)) for op in ops for params in levels(operators, op)]
            continue
        out += [("tighten", t) for t in notches(operators, m, +1)]
        out += [("loosen", t) for t in notches(operators, m, -1)]
        out.append(("undo", Mutation(layer, "dense", {})))
        for op in ops:
            if op == m.operator:
                continue
            for params in levels(operators, op):
                out.append(("stack" if extends(op, params, m) else "switch", Mutation(layer, op, params)))
    return out


def random_genome(operators: Mapping[str, Mapping[str, Any]], allowed: Mapping[str, list[str]], rng: random.Random,
                  *, first_step: int, last_step: int, most: int | None = None) -> Genome:
    """A random genome for ``--strategy random``: 1 to len(allowed) mutations (at most ``most``) on distinct
    layers, each planned at a random step in [first_step, last_step] (kept in order)."""
    count = rng.randint(1, max(1, min(len(allowed), most or len(allowed))))
    steps = sorted(rng.randint(first_step, max(first_step, last_step)) for _ in range(count))
    out: list[Mutation] = []
    for step in steps:
        m = draw(operators, allowed, rng, exclude={x.layer for x in out})
        if m is not None:
            out.append(m.applied(step))
    return tuple(out)


def uniform_genomes(operators: Mapping[str, Mapping[str, Any]], allowed: Mapping[str, list[str]], rng: random.Random,
                    count: int, *, step: int, fits: Callable[[Genome], bool] | None = None) -> list[Genome]:
    """Genomes for ``--strategy uniform``: each applies ONE operator at one level to every layer that allows
    it, all at ``step``. The (operator, level) grid is filtered by ``fits`` (when given: the combinations
    whose model fits the budget), shuffled by ``rng`` and dealt out in turn, so ``count`` trials cover
    ``min(count, grid size)`` distinct combinations. An empty grid gives dense genomes.

    Args:
        operators: the space's ``mutations.operators``.
        allowed: layer name -> operators allowed on it (see `targets`).
        rng: the search's seeded generator.
        count: the number of trials.
        step: the training step at which every mutation is applied (the warm-up's end).
        fits: keeps a genome when True; None keeps the whole grid.
    """
    grid: list[Genome] = []
    for op in sorted({o for ops in allowed.values() for o in ops}):
        for params in levels(operators, op):
            genome = tuple(Mutation(layer, op, params).applied(step) for layer in allowed if op in allowed[layer])
            if fits is None or fits(genome):
                grid.append(genome)
    rng.shuffle(grid)
    return [grid[i % len(grid)] for i in range(count)] if grid else [() for _ in range(count)]
