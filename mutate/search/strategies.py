"""Search strategies behind one small interface: propose genomes, observe results. Pure Python: no TF, no Ray.

The Ray runner (`mutate.search.runner`) only runs trials. It asks a strategy for the first population
(`Strategy.initial`), asks it for a move whenever PBT explores an exploiting trial (`Strategy.propose`), and
tells it what every report measured (`Strategy.observe`), the way Keras Tuner's Oracle runs without Keras.

- ``pbt``: population-based training whose explore is *informed*: moves (add, tighten, loosen, undo,
  switch; `mutate.search.policy.moves`) are ranked by the sensitivity table's expected metric cost per byte and by
  where the trial stands against the budget. A trial over budget always gets a move that cuts bytes; one
  under budget may trade bytes back for accuracy, and with nothing to gain keeps its genome (or, when the
  learning rate is not perturbed, takes the cheapest cut per byte). With probability `EPSILON` the move is drawn
  at random among those allowed (the search can still surprise). Every explore also multiplies the cloned
  trial's learning rate by a factor from ``search.learning_rate_factors`` (PBT's classic perturbation). Its first
  population is greedy's solutions when ``search.seed_greedy`` is on, else one random mutation per trial; with
  ``search.hedge`` (on by default) every other member is instead the best genome of another operator on the layer
  that can save the most bytes (`hedged_solutions`), so PBT's exploit can move the population to the operator
  that trains best when the table, measured without training, ranked it second. With ``search.max_copies: N``
  (1 by default in a space; null turns it off) a clone never holds a genome that N other members hold: it
  takes the cheapest cut per byte to a genome no member holds instead (a converged population spreads down
  the front).
- ``greedy``: the table's best genomes under the budget (an exact knapsack over per-layer levels, costs
  assumed additive), the top distinct ones trained as the population; no explore.
- ``random``: whole random genomes at random steps (no table, no budget).
- ``uniform``: one operator at one level on every layer, dealt from the (operator, level) combinations whose
  model fits the budget (sizes are known before training); the whole grid when none fits.
"""

from __future__ import annotations

import abc
import heapq
import math
import random
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from mutate.search import policy
from mutate.search.genome import Genome, Mutation, choices
from mutate.search.table import Table

EPSILON = 0.2
"""Probability that PBT's explore draws its move at random among the allowed ones."""


@dataclass
class Context:
    """What a strategy knows about the search.

    Attributes:
        operators: the space's ``mutations.operators``.
        allowed: layer name -> operators allowed on it.
        budget: the size budget in bytes.
        table: the sensitivity table (sizes always; metrics when measured).
        max_mutations: the longest genome.
        warmup_steps: the step of the first mutations.
        steps: training steps per trial.
        window: a mutation's blend window in steps.
        seed: the search's seed.
        seed_greedy: PBT starts from greedy's solutions.
        hedge: PBT's greedy start alternates greedy's best genomes with other operators on the largest layer.
        learning_rate_factors: PBT's explore multiplies the cloned trial's learning rate by one of these,
            drawn at random (empty: the learning rate stays the space's).
        budget_fractions: the niches of pbt and greedy: each member aims at ``fraction * budget`` (1.0 first);
            PBT exploits within a niche, so lineages at smaller budgets cover the front below the budget.
        max_copies: PBT's explore: a genome that this many other members already hold is not copied once
            more (`PBT.propose`); None: no limit.
        overhead: bytes a trial's measured size adds above the counted bytes planned here (``budget.unit:
            litert``: the file's graph; ``budget`` is then the file budget less it), so that a niche aims at its
            fraction of the whole measured budget, less the overhead.
    """

    operators: Mapping[str, Mapping[str, Any]]
    allowed: Mapping[str, list[str]]
    budget: int
    table: Table
    max_mutations: int = 8
    warmup_steps: int = 0
    steps: int = 0
    window: int = 0
    seed: int = 0
    seed_greedy: bool = True
    hedge: bool = True
    learning_rate_factors: tuple[float, ...] = ()
    budget_fractions: tuple[float, ...] = (1.0,)
    overhead: int = 0
    max_copies: int | None = None


class Strategy(abc.ABC):
    """Proposes genomes and learns from results.

    Attributes:
        name: the ``search.strategy`` value.
        explores: True when the runner should explore with PBT (`propose` is called on exploits).
        needs_metrics: True when the sensitivity table must hold measured metrics, not only sizes.
        niched: True when the strategy aims members at ``budget_fractions`` (see `fractions`).
    """

    name: ClassVar[str] = ""
    explores: ClassVar[bool] = False
    needs_metrics: ClassVar[bool] = False
    niched: ClassVar[bool] = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rng = random.Random(f"{self.name}-{ctx.seed}")

    def fractions(self, count: int) -> list[float]:
        """Each member's niche, as a fraction of the budget: ``count // len(budget_fractions)`` members per
        fraction and the rest at 1.0, largest first. Strategies that ignore the budget: all 1.0."""
        fr = sorted(set(self.ctx.budget_fractions) | {1.0}, reverse=True) if self.niched else [1.0]
        each = count // len(fr)
        return [1.0] * (count - each * (len(fr) - 1)) + [f for f in fr[1:] for _ in range(each)]

    def target(self, fraction: float = 1.0) -> int:
        """The counted bytes a member of niche ``fraction`` aims at: its share of the measured budget (a trial
        scores its size against ``floor(fraction * measured budget)``), less the measured overhead."""
        c = self.ctx
        return int(math.floor((c.budget + c.overhead) * fraction)) - c.overhead

    @abc.abstractmethod
    def initial(self, count: int) -> list[Genome]:
        """The first population: ``count`` genomes (with their planned steps), member i in niche
        ``fractions(count)[i]``."""

    def propose(self, genome: Genome, fraction: float = 1.0, peers: Sequence[Genome] = ()) -> Mutation | None:
        """The mutation to append to an exploiting trial's genome (a member of niche ``fraction``), or None to
        keep it. ``peers``: the genomes the other members hold (the cloned trial's included)."""
        return None

    def learning_rate(self, rate: float) -> float:
        """The learning rate an exploiting trial continues with, given the cloned trial's ``rate``."""
        return rate

    def observe(self, genome: Genome, metric: float, *, settled: bool, step: int | None = None) -> None:
        """A report at ``step``: ``metric`` is the validation accuracy (minus the validation loss for a language
        model). ``settled`` is True when every mutation of ``genome`` finished blending; only those update the
        table, against the other reports at the same step (`Table.observe`)."""
        if settled and self.ctx.table.measured:
            self.ctx.table.observe(genome, metric, step)


def greedy_solutions(table: Table, allowed: Mapping[str, list[str]], budget: int, count: int,
                     keep: int = 4000, max_len: int | None = None) -> list[Genome]:
    """Up to ``count`` distinct genomes that fit ``budget`` at the lowest predicted cost, best first, each with at
    most ``max_len`` mutations (``mutations.max_mutations``; None: no limit).

    An exact knapsack over layers (each dense or at one table level of an allowed operator) with the costs
    summed, pruned after each layer to the states dominated (more cost, fewer bytes saved) by fewer than
    ``count`` others; past ``keep`` such states (many layers of many levels), to the cheapest ``count`` in each
    of ``keep // count`` equal bands of bytes saved, so the states a tight budget needs survive. Of equal
    predicted cost, the smaller model comes first (it dominates: the same predicted accuracy in fewer bytes),
    so the first solution does not depend on ``count``.
    """
    states: list[tuple[float, int, tuple[Mutation, ...]]] = [(0.0, 0, ())]
    need = table.dense_bytes - budget
    for layer in table.layers():
        opts: list[tuple[float, int, tuple[Mutation, ...]]] = [(0.0, 0, ())]
        for e in table.options(layer):
            if e.operator in allowed.get(layer, ()):
                m = Mutation(layer, e.operator, dict(e.params))
                opts.append((table.cost(m), e.saved, (m,)))
        merged = [(c + oc, s + os, ch + och) for c, s, ch in states for oc, os, och in opts
                  if max_len is None or len(ch) + len(och) <= max_len]
        states = _prune(merged, count, keep)
    fits = sorted((st for st in states if st[1] >= need), key=_order)
    return [st[2] for st in fits[:count]]


def hedged_solutions(table: Table, allowed: Mapping[str, list[str]], budget: int, count: int,
                     max_len: int | None = None) -> list[Genome]:
    """Up to ``count`` genomes that fit ``budget``: greedy's best (`greedy_solutions`) alternating with, for
    each other operator allowed on the layer that can save the most bytes, the best genome that uses it there
    (cheapest predicted cost first); distinct, greedy's best first.

    The table prices each layer's options from the warm-up weights without training, and operators recover
    differently in training (a fashion MLP at 8% of dense: the table put low-rank r=8 on its 784x256 layer
    first on one seed, pricing k-means k=4 there at 63 points; every greedy genome used low-rank, and k-means
    k=4 there trained 0.3-0.9 points better on validation: experiments/README.md, search_study). The largest
    layer's operator decides most of the size and most of that difference, so PBT starts with both and its
    exploit keeps what trains best."""
    best = greedy_solutions(table, allowed, budget, count, max_len=max_len)
    if count < 2 or not best:
        return best

    def most(layer: str) -> int:
        return max((e.saved for e in table.options(layer) if e.operator in allowed.get(layer, ())), default=0)

    big = max(table.layers(), key=most)
    on_big = {m.operator for m in best[0] if m.layer == big}
    alts = []
    for op in allowed.get(big, ()):
        if op in on_big:
            continue
        sols = greedy_solutions(table, {**allowed, big: [op]}, budget, 1, max_len=max_len)
        if sols and any(m.layer == big and m.operator == op for m in sols[0]):
            alts.append(sols[0])
    alts.sort(key=table.predicted_cost)
    out: list[Genome] = []
    queues = [list(best), alts]
    while len(out) < count and any(queues):
        q = queues[len(out) % 2] or queues[(len(out) + 1) % 2]
        g = q.pop(0)
        if g not in out:  # the knapsack lists a genome's mutations in table order: equal genomes compare equal
            out.append(g)
    return out


def _order(state: tuple[float, int, tuple]) -> tuple[float, int]:
    """Knapsack states by predicted cost (rounded: sums in another order are equal), then most bytes saved."""
    return round(state[0], 12), -state[1]


def _prune(states: list[tuple[float, int, tuple]], count: int, keep: int) -> list[tuple[float, int, tuple]]:
    """States dominated by fewer than ``count`` others (sweep by cost with a heap of the largest savings)."""
    states.sort(key=_order)
    top: list[int] = []
    out = []
    for st in states:
        if len(top) < count or st[1] > top[0]:
            out.append(st)
        if len(top) < count:
            heapq.heappush(top, st[1])
        elif st[1] > top[0]:
            heapq.heapreplace(top, st[1])
    if len(out) <= keep:
        return out
    # too many: the cheapest `count` in each band of bytes saved (the cheapest overall kept the small savings
    # only, and a tight budget then had no state left that fits it)
    bands = max(1, keep // max(1, count))
    low, high = min(st[1] for st in out), max(st[1] for st in out)
    width = (high - low) / bands or 1.0
    kept: dict[int, int] = {}
    banded = []
    for st in out:  # cheapest first
        band = min(bands - 1, int((st[1] - low) / width))
        if kept.get(band, 0) < count:
            kept[band] = kept.get(band, 0) + 1
            banded.append(st)
    return banded


def _planned(genome: tuple[Mutation, ...], step: int) -> Genome:
    return tuple(m.applied(step) for m in genome)


def _greedy_population(strategy: Strategy, count: int, hedge: bool = False) -> list[Genome] | None:
    """Per niche, greedy's top solutions for that niche's target (`hedged_solutions` with ``hedge``), distinct
    from the niches above (a genome that fits a smaller niche's target also fits the larger's; cycled when
    there are fewer), each with at most ``mutations.max_mutations`` mutations; None when the budget's own niche
    has none."""
    c = strategy.ctx
    fractions = strategy.fractions(count)
    out: list[Genome] = []
    taken: list[tuple[Mutation, ...]] = []
    last: list[tuple[Mutation, ...]] = []
    solve = hedged_solutions if hedge else greedy_solutions
    for f in dict.fromkeys(fractions):
        n = fractions.count(f)
        sols = solve(c.table, c.allowed, strategy.target(f), n + len(taken), max_len=c.max_mutations)
        sols = [g for g in sols if g not in taken][:n] or sols[:n] or last  # none fits: the niche above's
        if not sols:
            return None
        out += [_planned(sols[i % len(sols)], c.warmup_steps) for i in range(n)]
        taken += [g for g in sols if g not in taken]
        last = sols
    return out


class Greedy(Strategy):
    """The table's cheapest genomes under the budget (per niche), trained as the population."""

    name = "greedy"
    needs_metrics = True
    niched = True

    def initial(self, count: int) -> list[Genome]:
        pop = _greedy_population(self, count)
        return pop if pop is not None else [() for _ in range(count)]


class PBT(Strategy):
    """Population-based training with the informed explore described in the module docstring."""

    name = "pbt"
    explores = True
    needs_metrics = True
    niched = True

    def initial(self, count: int) -> list[Genome]:
        c = self.ctx
        if c.seed_greedy:
            pop = _greedy_population(self, count, hedge=c.hedge)
            if pop is not None:
                return pop
        out = []
        for _ in range(count):
            first = policy.draw(c.operators, c.allowed, self.rng)
            out.append((first.applied(c.warmup_steps),) if first is not None else ())
        return out

    def candidates(self, genome: Genome) -> list[dict[str, Any]]:
        """Every move from ``genome`` with its predicted bytes after, bytes cut and cost change."""
        t = self.ctx.table
        before, cost = t.predicted_bytes(genome), t.predicted_cost(genome)
        out = []
        for kind, m in policy.moves(self.ctx.operators, self.ctx.allowed, genome):
            after = (*genome, m)
            b = t.predicted_bytes(after)
            out.append({"kind": kind, "mutation": m, "bytes": b, "cut": before - b,
                        "dcost": t.predicted_cost(after) - cost})
        return out

    def learning_rate(self, rate: float) -> float:
        """The cloned trial's ``rate`` times a factor drawn from ``learning_rate_factors`` (PBT's classic
        perturbation: lineages that do better with a smaller or larger rate take over the population)."""
        factors = self.ctx.learning_rate_factors
        return rate * self.rng.choice(factors) if factors else rate

    def propose(self, genome: Genome, fraction: float = 1.0, peers: Sequence[Genome] = ()) -> Mutation | None:
        """`_propose`'s move; but with ``max_copies``, a move (or none) whose genome that many ``peers`` already
        hold becomes the cheapest byte cut per byte whose genome no peer holds (when there is one and the
        genome is under ``max_mutations``): a population that has converged on one genome spreads down the
        front instead of training further copies of it."""
        move = self._propose(genome, fraction)
        cap = self.ctx.max_copies
        if cap is None or not peers or len(genome) >= self.ctx.max_mutations:
            return move
        held = [choices(g) for g in peers]
        if held.count(choices(genome if move is None else (*genome, move))) < cap:
            return move
        cuts = [x for x in self.candidates(genome) if x["cut"] > 0
                and choices((*genome, x["mutation"])) not in held]
        return min(cuts, key=_per_byte)["mutation"] if cuts else move

    def _propose(self, genome: Genome, fraction: float = 1.0) -> Mutation | None:
        """Over budget (the niche's target): a byte-cutting move, the cheapest that gets under the budget, else the cheapest per
        byte cut. Under budget: the move with the largest expected gain that stays under; when none is
        expected to gain, the genome stays when the learning rate is perturbed (the clone explores the
        rate on the parent's model), else the cheapest cut per byte (the lineage walks down the front toward
        smaller models, which PBT's exploit undoes if it costs too much; reported points stay on the front).
        A genome of ``max_mutations`` moves gets none more, unless it is over budget: that one still gets its
        byte-cutting move."""
        c = self.ctx
        budget = self.target(fraction)
        over = c.table.predicted_bytes(genome) > budget
        if len(genome) >= c.max_mutations and not over:  # the cap: an over-budget trial still gets its cut
            return None
        cands = self.candidates(genome)
        legal = [x for x in cands if x["cut"] > 0] if over else [x for x in cands if x["bytes"] <= budget]
        if not legal:
            return None
        if self.rng.random() < EPSILON:
            return self.rng.choice(legal)["mutation"]
        if over:
            fitting = [x for x in legal if x["bytes"] <= budget]
            if fitting:
                return min(fitting, key=lambda x: (x["dcost"], x["cut"]))["mutation"]
            return min(legal, key=_per_byte)["mutation"]
        gains = [x for x in legal if x["dcost"] < -1e-12]
        if gains:
            return min(gains, key=lambda x: (x["dcost"], x["cut"]))["mutation"]
        if c.learning_rate_factors:
            return None
        cuts = [x for x in cands if x["cut"] > 0]
        return min(cuts, key=_per_byte)["mutation"] if cuts else None


def _per_byte(move: dict[str, Any]) -> tuple[int, float, float]:
    """Byte-cutting moves, best first: those expected to gain (or cost nothing) by the most bytes cut (then
    the largest gain), then the others by cost per byte cut (a gain over a small cut is a large negative ratio:
    ranking gains by the ratio put a 100-byte cut before a 20,000-byte cut of the same gain)."""
    if move["dcost"] <= 0:
        return 0, -float(move["cut"]), move["dcost"]
    return 1, move["dcost"] / move["cut"], -float(move["cut"])


class RandomGenomes(Strategy):
    """Whole random genomes, mutations at random steps (the naive baseline; ignores the budget)."""

    name = "random"

    def initial(self, count: int) -> list[Genome]:
        c = self.ctx
        return [policy.random_genome(c.operators, c.allowed, self.rng, first_step=c.warmup_steps,
                                     last_step=max(c.warmup_steps, c.steps - c.window), most=c.max_mutations)
                for _ in range(count)]


class Uniform(Strategy):
    """One operator at one level on every allowed layer: the user's obvious choice, among those that fit."""

    name = "uniform"

    def initial(self, count: int) -> list[Genome]:
        c = self.ctx
        fitting = policy.uniform_genomes(c.operators, c.allowed, self.rng, count, step=c.warmup_steps,
                                         fits=lambda g: c.table.predicted_bytes(g) <= c.budget)
        if any(fitting):
            return fitting
        # no single operator and level fits: deal the whole grid rather than train dense models, and say so
        grid = policy.uniform_genomes(c.operators, c.allowed, self.rng, count, step=c.warmup_steps)
        smallest = min((c.table.predicted_bytes(g) for g in grid if g), default=None)
        print(f"mutate: note: uniform: no single operator and level on every mutable layer fits the budget "
              f"({c.budget:,} B; the smallest dealt: {smallest:,} B): its trials deal the whole grid and stay over "
              "it", file=sys.__stderr__, flush=True)  # the console: Ray's start redirects sys.stderr
        return grid


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (PBT, Greedy, RandomGenomes, Uniform)}


def make(name: str, ctx: Context) -> Strategy:
    """The strategy called ``name``."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](ctx)


def settled(genome: Genome, step: int, window: int) -> bool:
    """True when every mutation of ``genome`` was applied at least ``window`` steps before ``step``."""
    return all(m.step is not None and m.step + window <= step for m in genome)


def table_metric(row: Mapping[str, Any]) -> float:
    """A report's metric in the table's units: validation accuracy, or minus the validation loss (nats) of a
    language model."""
    if "val_accuracy" in row:
        return float(row["val_accuracy"])
    ppl = float(row["val_perplexity"])
    return -math.log(ppl) if ppl > 0 else -math.inf
