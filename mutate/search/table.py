"""The sensitivity table: per (layer, operator, level), what factoring that layer alone costs and saves.

AIMET's greedy compression-ratio selection measures an "eval dictionary" (one accuracy per layer and ratio)
before it chooses; this is the same table over several operators per layer. `mutate.search.sensitivity` fills it
from the warm-up weights; the strategies (`mutate.search.strategies`) read it to rank moves and to choose genomes.
Pure Python: no TensorFlow, no Ray.

An *option* of a layer is an (operator, params) pair, or None for the dense layer. Its ``saved`` bytes are
``4 * m * n`` minus the bytes its spliced factors store (the bias is unchanged), so a genome's spliced size
is exactly ``dense_bytes - sum(saved)``. Its ``cost`` is the validation metric lost against the warm-up
model (accuracy as a fraction, or the loss in nats for a language model), plus a correction fitted to what
trials later reported, each against the others at the same step (`Table.observe`); never negative.

For accuracy the cost is read from the loss, not from the accuracy itself: on a validation subset of a few
thousand examples one example is 0.05 points, and levels whose true costs differ by a few tenths of a point
swap places by chance (a fashion_mlp table measured k-means k=4 on dense_1 at 0.874 and k=8 at 0.868, while
their losses rose by 0.05 and 0.01 nats), which sent greedy's knapsack to a model 30% under the budget. The
loss moves continuously with the weights; the table converts its increase into accuracy with its own exchange
rate (`Table.accuracy_per_nat`: the median accuracy drop per nat over the entries whose loss rose clearly).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mutate import files
from mutate.search.genome import Genome, Mutation, current

TABLE_FILE = "sensitivity.json"
RIDGE = 0.01
"""The weight of the prior "no correction" in `Table.observe`'s fit, against one report's squared residual (in
accuracy, or nats): a level's correction takes about that many reports' worth of evidence; validation noise is
about 0.005 in accuracy, the corrections trials teach 0.01-0.5."""
CLEAR_NATS, MIN_RATES = 0.02, 3
"""`Table.accuracy_per_nat` uses entries whose validation loss rose by at least CLEAR_NATS, and needs MIN_RATES
of them."""

Option = tuple[str, tuple[tuple[str, Any], ...]]
"""(operator, sorted (param, value) pairs): a hashable level of one operator."""


def option_of(op: str, params: dict[str, Any]) -> Option:
    """The hashable option for ``op(**params)``."""
    return op, tuple(sorted(params.items()))


@dataclass
class Entry:
    """One row: ``operator(**params)`` on ``layer`` alone.

    Attributes:
        layer: the layer name.
        operator: the operator name.
        params: its parameters.
        saved: bytes saved against the dense layer once spliced.
        metric: validation accuracy (or loss, for a language model) after factoring this layer alone from the
            warm-up weights, on the table's validation subset; None when only sizes were measured.
        loss: the validation loss measured with it (None when only sizes were measured).
        seconds: time to factor and evaluate it.
    """

    layer: str
    operator: str
    params: dict[str, Any]
    saved: int
    metric: float | None = None
    loss: float | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        """Refuse a row of the wrong types (a damaged or hand-edited sensitivity.json): `load` says which file."""
        from mutate.results.runs import is_number

        def number(v: Any, optional: bool) -> bool:
            return (v is None and optional) or is_number(v)

        if not (isinstance(self.layer, str) and isinstance(self.operator, str) and isinstance(self.params, dict)):
            raise TypeError(f"entry {self.layer!r}/{self.operator!r}: layer, operator and params must be text, "
                            "text and a mapping")
        for name, optional in (("saved", False), ("metric", True), ("loss", True), ("seconds", False)):
            if not number(getattr(self, name), optional):
                raise TypeError(f"entry {self.layer!r}/{self.operator!r}: {name}: {getattr(self, name)!r} is not "
                                "a number")

    @property
    def option(self) -> Option:
        return option_of(self.operator, self.params)


@dataclass
class Table:
    """The table of a search, with the warm-up model's own metric as the reference.

    Attributes:
        entries: every (layer, operator, level) of the space.
        base_metric: the warm-up model's validation metric (None when only sizes were measured).
        base_loss: its validation loss.
        lm: True when the metric is a language model's loss (lower is better), False for accuracy.
        dense_bytes: the dense model's bytes.
        seconds: the time it took to build the table (warm-up training included).
        subset: validation examples evaluated per entry.

    The corrections learnt from trials (`observe`, `corrections`) are not stored: a resumed run replays its
    reports.
    """

    entries: list[Entry]
    base_metric: float | None = None
    base_loss: float | None = None
    lm: bool = False
    dense_bytes: int = 0
    seconds: float = 0.0
    subset: int = 0

    # -- look-ups -------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self._index = {(e.layer, e.option): e for e in self.entries}
        self._reports: list[tuple[int | None, tuple[str, ...], float]] = []  # (step, option keys, metric)
        self._corrections: dict[str, float] = {}
        self._stale = False

    def accuracy_per_nat(self) -> float | None:
        """The table's exchange rate from validation loss to accuracy: the median of (accuracy drop / loss
        increase) over entries whose loss rose by at least `CLEAR_NATS`, clipped to >= 0; None for a language
        model, a table without metrics, or fewer than `MIN_RATES` such entries."""
        if self.lm or self.base_metric is None or self.base_loss is None:
            return None
        rates = [(self.base_metric - e.metric) / (e.loss - self.base_loss) for e in self.entries
                 if e.metric is not None and e.loss is not None and e.loss - self.base_loss >= CLEAR_NATS]
        return max(0.0, float(np.median(rates))) if len(rates) >= MIN_RATES else None

    @property
    def measured(self) -> bool:
        """True when accuracies were measured (not only sizes)."""
        return self.base_metric is not None and all(e.metric is not None for e in self.entries)

    def layers(self) -> list[str]:
        """The layers, in table order."""
        return list(dict.fromkeys(e.layer for e in self.entries))

    def options(self, layer: str) -> list[Entry]:
        """The entries of ``layer``."""
        return [e for e in self.entries if e.layer == layer]

    def entry(self, layer: str, op: str, params: dict[str, Any]) -> Entry | None:
        """The entry for ``op(**params)`` on ``layer`` (None when the table has no such level)."""
        return self._index.get((layer, option_of(op, params)))

    def saved(self, m: Mutation | None) -> int:
        """Bytes saved by a mutation in force (0 for None, a dense layer, or a level not in the table)."""
        if m is None or m.operator == "dense":
            return 0
        e = self.entry(m.layer, m.operator, m.params)
        return e.saved if e is not None else 0

    def cost(self, m: Mutation | None) -> float:
        """Predicted metric lost by a mutation in force: measured drop (clipped at 0) plus observed correction,
        never below 0 (a mutation is not predicted to gain).

        For accuracy the drop is the loss increase times `accuracy_per_nat` (see the module docstring); when
        the table cannot estimate that rate (fewer than `MIN_RATES` clear entries), the accuracy drop plus 1% of
        the loss increase. For a language model it is the loss increase.
        """
        if m is None or m.operator == "dense":
            return 0.0
        e = self.entry(m.layer, m.operator, m.params)
        if e is None:
            return 0.0
        return max(0.0, self._drop(e) + self.corrections.get(_key(e.layer, e.option), 0.0))

    def _drop(self, e: Entry) -> float:
        """The measured part of `cost`: the metric ``e`` lost against the warm-up model, clipped at 0."""
        if e.metric is None or self.base_metric is None:
            return 0.0
        dloss = (e.loss or 0.0) - (self.base_loss or 0.0)
        if self.lm:
            drop = dloss
        elif (rate := self.accuracy_per_nat()) is not None:  # computed here: `sensitivity` fills metrics in later
            drop = rate * dloss
        else:
            drop = (self.base_metric - e.metric) + 0.01 * dloss
        return max(0.0, drop)

    def predicted_bytes(self, genome: Genome) -> int:
        """The genome's size once every mutation is spliced: dense bytes minus what each layer saves."""
        return self.dense_bytes - sum(self.saved(m) for m in current(genome).values())

    def predicted_cost(self, genome: Genome) -> float:
        """Sum of the per-layer costs of the mutations in force (layers assumed independent)."""
        return sum(self.cost(m) for m in current(genome).values())

    # -- learning from trials ---------------------------------------------------------------------------------
    def observe(self, genome: Genome, metric: float, step: int | None = None) -> None:
        """Record what a trial measured at ``step`` with ``genome`` in force; the corrections are refitted
        from every report so far the next time a cost is read (`corrections`).

        Every report (dense genomes too) is one equation: ``metric = reference(step) - sum of its levels'
        costs``, a level's cost being its measured drop plus a correction. The reference is what the
        uncompressed model would score at that step, one unknown per step: trials train on, and the warm-up
        model's metric, the reference before, was beaten by trained trials, so several observed levels'
        costs fell below zero (replayed over fashion_mlp.yaml's PBT runs,
        experiments/replay_corrections.py: down to -0.26). The corrections
        are the ridge-regularised least-squares solution (`RIDGE`; a level never observed keeps its measured
        cost), so a level is blamed for what its genomes lose against the other genomes at the same steps,
        not for what the other levels of its genome lose; then clipped so that no cost is below 0. A step
        reported once only fixes its own reference. ``step`` None pools every report into one reference.
        Reports arrive in order, so a resumed run relearns the same corrections by replaying them.
        """
        if self.base_metric is None or not math.isfinite(metric):
            return
        keys = tuple(_key(m.layer, option_of(m.operator, m.params)) for m in current(genome).values()
                     if self.entry(m.layer, m.operator, m.params) is not None)
        self._reports.append((step, keys, float(metric)))
        self._stale = True

    @property
    def corrections(self) -> dict[str, float]:
        """Option key -> the correction of its measured cost learnt from the reports (`observe`)."""
        if self._stale:
            self._corrections = self._fit()
            self._stale = False
        return self._corrections

    def _fit(self) -> dict[str, float]:
        options = sorted({k for _, keys, _ in self._reports for k in keys})
        if not options:
            return {}
        by_key = {_key(e.layer, e.option): e for e in self.entries}
        drop = {k: self._drop(by_key[k]) for k in options}  # once each: every one reads the exchange rate
        steps = list(dict.fromkeys(step for step, _, _ in self._reports))
        col = {k: i for i, k in enumerate(options)}
        col_of_step = {s: len(options) + i for i, s in enumerate(steps)}
        a = np.zeros((len(self._reports) + len(options), len(options) + len(steps)))
        y = np.zeros(len(a))
        for i, (step, keys, metric) in enumerate(self._reports):
            a[i, col_of_step[step]] = 1.0
            for k in keys:
                a[i, col[k]] = -1.0
            y[i] = metric + sum(drop[k] for k in keys)
        for j in range(len(options)):  # the prior: no correction
            a[len(self._reports) + j, j] = math.sqrt(RIDGE)
        solution = np.linalg.lstsq(a, y, rcond=None)[0]
        return {k: max(-drop[k], float(solution[col[k]])) for k in options}

    # -- storage ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"base_metric": self.base_metric, "base_loss": self.base_loss, "lm": self.lm,
                "dense_bytes": self.dense_bytes, "seconds": self.seconds, "subset": self.subset,
                "entries": [{"layer": e.layer, "operator": e.operator, "params": e.params, "saved": e.saved,
                             "metric": e.metric, "loss": e.loss, "seconds": e.seconds} for e in self.entries]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Table:
        from mutate.results.runs import is_number

        for name in ("base_metric", "base_loss"):
            v = d.get(name)
            if v is not None and not is_number(v):
                raise TypeError(f"{name}: {v!r} is not a number")
        return cls([Entry(**e) for e in d["entries"]], base_metric=d.get("base_metric"),
                   base_loss=d.get("base_loss"), lm=bool(d.get("lm")), dense_bytes=int(d.get("dense_bytes", 0)),
                   seconds=float(d.get("seconds", 0.0)), subset=int(d.get("subset", 0)))

    def save(self, run_dir: Path) -> Path:
        """Write ``RUN_DIR/sensitivity.json`` atomically; returns its path."""
        path = Path(run_dir) / TABLE_FILE
        files.write_text(path, json.dumps(self.to_dict(), indent=1))
        return path

    def lines(self) -> list[str]:
        """A readable table, one row per entry, most bytes saved per point of metric first within a layer."""
        # a language model's entries hold minus the loss as their metric: its column shows the loss itself
        unit = "val loss" if self.lm else "val acc"
        out = [f"{'layer':<24}{'option':<34}{'saved B':>10}{unit:>10}{'cost':>9}"]
        for layer in self.layers():
            for e in sorted(self.options(layer), key=lambda e: -e.saved):
                args = ",".join(f"{k}={v}" for k, v in sorted(e.params.items()))
                value = e.loss if self.lm else e.metric
                metric = "-" if value is None else f"{value:.4f}"
                cost = self.cost(Mutation(e.layer, e.operator, e.params))
                out.append(f"{layer:<24}{e.operator + '(' + args + ')':<34}{e.saved:>10,}{metric:>10}{cost:>9.4f}")
        return out


def saved_bytes(op: Any, m: int, n: int, kernel_bits: int = 32) -> int:
    """Bytes an (m, n) kernel of ``kernel_bits`` per element (float32: 32) saves once spliced with the
    operator ``op``: its bytes minus those of its packed arrays (negative when the factors are larger)."""
    import operators

    bits = sum(int(np.prod(s.shape)) * operators.dtype_bits(s.dtype) for s in op.packed_specs(m, n).values())
    return (kernel_bits * m * n - bits) // 8


def load(run_dir: Path) -> Table | None:
    """The table a run stored, or None (a run of an earlier version, or one that measured none)."""
    from mutate.results.runs import read_record

    path = Path(run_dir) / TABLE_FILE
    record = read_record(path)
    if record is None:
        return None
    try:
        return Table.from_dict(record)
    except (KeyError, TypeError, ValueError) as e:
        from mutate.errors import BadInput

        raise BadInput(f"{path}: damaged, not a sensitivity table ({type(e).__name__}: {e})") from None


def _key(layer: str, option: Option) -> str:
    return f"{layer}|{option[0]}|{json.dumps(option[1])}"


def grid(params: dict[str, list[Any]]) -> Iterable[dict[str, Any]]:
    """Every combination of an operator's parameter choices, in sorted-key order."""
    import itertools

    keys = sorted(params)
    for combo in itertools.product(*(params[k] for k in keys)):
        yield dict(zip(keys, combo))
