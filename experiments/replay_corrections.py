"""Replay a finished search's reports through its sensitivity table: what each way of learning the table's
corrections makes of them (an analysis of recorded runs; it trains nothing).

    .venv/bin/python experiments/replay_corrections.py mutate_runs/search_study_fashion_full_v3/fashion_mlp_s*_pbt

For every run folder (its ``sensitivity.json`` and ``points.jsonl``), the settled reports (every mutation
applied at least ``--window`` steps earlier) are replayed in report order, and each observed level's cost is
printed three ways: the one-shot drop the table measured, the cost learnt by the rule used until 2026-12-02
(each report's residual against the warm-up model's metric spread evenly over its levels, 0.3 of the way per
report, unclipped), and the cost learnt by `mutate.search.table.Table.observe` now (a ridge least-squares fit
with one reference per step, costs >= 0). experiments/README.md quotes its output (the 784-256-128 MLP section).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mutate.search import table as tables  # noqa: E402
from mutate.search.genome import Mutation, current, from_json  # noqa: E402
from mutate.search.strategies import settled, table_metric  # noqa: E402


def warm_up_reference(table: tables.Table, reports: list[tuple]) -> dict[str, float]:
    """The corrections of the rule before 2026-12-02, replayed: residual against the warm-up model's metric."""
    corrections: dict[str, float] = {}

    def cost(m: Mutation) -> float:
        e = table.entry(m.layer, m.operator, m.params)
        return table._drop(e) + corrections.get(tables._key(e.layer, e.option), 0.0)

    base = -table.base_loss if table.lm and table.base_loss is not None else table.base_metric
    for genome, metric, _ in reports:
        in_force = [m for m in current(genome).values() if table.entry(m.layer, m.operator, m.params)]
        if not in_force:
            continue
        residual = (base - sum(cost(m) for m in in_force)) - metric
        for m in in_force:
            key = tables._key(m.layer, tables.option_of(m.operator, m.params))
            corrections[key] = corrections.get(key, 0.0) + 0.3 * residual / len(in_force)
    return corrections


def replay(run: Path, window: int) -> None:
    table = tables.load(run)
    if table is None or not table.measured:
        print(f"{run}: no measured sensitivity table")
        return
    rows = [json.loads(line) for line in (run / "points.jsonl").read_text().splitlines() if line.strip()]
    reports = []
    for r in rows:
        genome = from_json(r["genome"])
        if settled(genome, r["step"], window):
            reports.append((genome, table_metric(r), r["step"]))
    before = warm_up_reference(table, reports)
    for genome, metric, step in reports:
        table.observe(genome, metric, step)
    by_key = {tables._key(e.layer, e.option): e for e in table.entries}
    print(f"{run}: {len(reports)} settled reports of {len(rows)}")
    print(f"  {'level':<44}{'one-shot':>10}{'before':>10}{'now':>10}")
    for key in sorted(set(before) | set(table.corrections)):
        e = by_key[key]
        drop = table._drop(e)
        now = table.cost(Mutation(e.layer, e.operator, e.params))
        print(f"  {key:<44}{drop:>10.4f}{drop + before.get(key, 0.0):>10.4f}{now:>10.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of finished searches")
    parser.add_argument("--window", type=int, default=500, help="the space's mutations.window (default 500, "
                                                                "fashion_mlp.yaml's)")
    args = parser.parse_args()
    for run in args.runs:
        replay(run, args.window)


if __name__ == "__main__":
    main()
