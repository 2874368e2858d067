"""Pareto fronts of size against accuracy (or perplexity), and their hypervolume. Pure Python/NumPy.

Size is minimised; accuracy is maximised (perplexity minimised). A point dominates another when it is no
larger and no worse, and strictly better in one of the two; of two points equal in both (the same genome
reported at several steps, with the same validation accuracy), the one with the lower validation loss, when
both recorded it, else the first reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Point:
    """One reported model of a search.

    Attributes:
        trial: the Ray Tune trial id.
        step: the trial's training step.
        size: bytes stored.
        ratio: size as a fraction of the dense model.
        metric: the **validation** accuracy (or perplexity when ``higher_is_better`` is False): what every
            selection (front, hypervolume, export) reads.
        genome: the mutations in force, e.g. ``dense_1:low_rank(r=16) logits:pruning(s=0.9)``.
        checkpoint: folder of ``model.keras`` + ``state.json``, relative to the run directory.
        row: the full stored row.
        test: the test accuracy (or perplexity), evaluated once after the search for the points it chose; None
            until then. Runs of earlier versions evaluated the test set at every report: their rows' test
            values show here too (see `mutate.results.report.Run.test_source`).
        loss: the validation loss (``val_loss``; None in runs of earlier versions): breaks ties between
            points of equal size and validation metric (on 135 validation examples, digits' accuracy moves
            in steps of 0.0074, and a genome often reports the same accuracy at several steps).
    """

    trial: str
    step: int
    size: int
    ratio: float
    metric: float
    genome: str
    checkpoint: str
    row: dict[str, Any]
    test: float | None = None
    loss: float | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Point:
        """A point from a stored row: its metric is ``val_accuracy`` (or ``val_perplexity``); its test value
        ``test_accuracy`` (``test_perplexity``), or an earlier version's per-report ``accuracy``.

        Raises:
            KeyError: the row has no validation metric.
        """
        lm = "val_perplexity" in row
        metric = row["val_perplexity"] if lm else row["val_accuracy"]
        name = "perplexity" if lm else "accuracy"
        test = row.get(f"test_{name}", row.get(name))
        loss = row.get("val_loss")
        return cls(str(row["trial"]), int(row["step"]), int(row["bytes"]), float(row["ratio"]), float(metric),
                   str(row.get("genome_summary", "")), str(row.get("checkpoint", "")), row,
                   None if test is None else float(test), None if loss is None else float(loss))


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _tie_loss(p: Point) -> float:
    return math.inf if p.loss is None or not math.isfinite(p.loss) else p.loss


def dominates(p: Point, q: Point, higher_is_better: bool = True) -> bool:
    """True when ``p`` is no larger and no worse than ``q`` and strictly better in size or metric, or equal
    in both with a lower validation loss (both recorded)."""
    no_worse = p.metric >= q.metric if higher_is_better else p.metric <= q.metric
    if p.size == q.size and p.metric == q.metric:
        return _tie_loss(p) < _tie_loss(q)
    return p.size <= q.size and no_worse and (p.size < q.size or _better(p.metric, q.metric, higher_is_better))


def front(points: Iterable[Point], higher_is_better: bool = True) -> list[Point]:
    """The non-dominated points, smallest first; of duplicates (same size and metric) the one with the lowest
    validation loss, else the first reported.

    One sweep over the points sorted by size (then best metric first, then lowest loss): a point joins the
    front when its metric beats every smaller point's.
    """
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(enumerate(points), key=lambda ip: (ip[1].size, -sign * ip[1].metric, _tie_loss(ip[1]), ip[0]))
    out: list[Point] = []
    for _, p in order:
        if not out or _better(p.metric, out[-1].metric, higher_is_better):
            out.append(p)
    return out


def hypervolume(points: Sequence[Point], reference_metric: float, reference_ratio: float = 1.0,
                higher_is_better: bool = True) -> float:
    """Area dominated by the front inside the box from (0, reference_metric) to (reference_ratio, best).

    The x axis is the size ratio to the dense model (0 is free, ``reference_ratio`` = 1.0 is dense); the y
    axis is the metric's gain over ``reference_metric`` (chance-level accuracy, or the perplexity of a
    uniform guess over the vocabulary). Points larger than the reference or worse than it add nothing.
    For accuracy the result is at most ``reference_ratio * (1 - reference_metric)``.
    """
    sign = 1.0 if higher_is_better else -1.0
    pts = [p for p in front(points, higher_is_better)
           if p.ratio < reference_ratio and sign * (p.metric - reference_metric) > 0]
    area = 0.0
    for i, p in enumerate(pts):
        right = pts[i + 1].ratio if i + 1 < len(pts) else reference_ratio
        area += (right - p.ratio) * sign * (p.metric - reference_metric)
    return area
