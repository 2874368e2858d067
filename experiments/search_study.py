"""The PBT mutation search against fixed strategies, at an equal trial budget.

    .venv/bin/python experiments/search_study.py              # fashion_mlp.yaml at 3000 steps, 3 searches
    .venv/bin/python experiments/search_study.py --yaml-steps # fashion_mlp.yaml as written (8 x 6000 steps)
    .venv/bin/python experiments/search_study.py --quick      # digits_mlp.yaml, ~5 min

By default the Fashion-MNIST searches run half the YAML's population and steps (4 trials of 3000 steps,
warm-up 1000, perturbation interval 500), so the three fit a 2-core machine in about 30 minutes; every
strategy gets the same settings.

Runs the same space three times with the same population (trial budget), steps and seed:

- ``pbt``: the mutation search (exploit + explore mutations);
- ``random``: ``--strategy random``, a whole random genome per trial, no exploit;
- ``uniform``: ``--strategy uniform``, each trial applies ONE operator at one level to every layer that allows
  it; the grid of (operator, level) is dealt out. Its trials are then grouped by operator, and the operator
  whose trials have the largest hypervolume is "the best uniform single method".

Writes ``search_study[_quick|_yaml].csv`` (one row per strategy: hypervolume, front, best accuracy within the
budget, wall time and Ray overhead), ``search_study[_quick|_yaml]_fronts.csv`` (every front's points) and
``.png`` (the overlaid fronts) next to this script; the runs themselves go to
``mutate_runs/search_study[_quick|_yaml]/`` (re-open them with ``mutate pareto``).
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from mutate import load_run  # noqa: E402
from mutate.pareto import Point, front, hypervolume  # noqa: E402
from mutate.runs import read_timing  # noqa: E402

STRATEGIES = ("pbt", "random", "uniform")
HALF = ["training.steps=3000", "mutations.warmup_steps=1000", "search.perturbation_interval=500",
        "search.population=4"]
FIELDS = ["strategy", "run_dir", "trials", "points", "front", "hypervolume", "best_accuracy_in_budget",
          "smallest_ratio_within_1pt", "wall_s", "overhead_pct"]


def search(space: Path, strategy: str, storage: Path, extra: list[str]) -> Path:
    """Run ``mutate search`` in a child process; returns the run dir."""
    cmd = [sys.executable, "-m", "mutate.cli", "search", str(space), "--strategy", strategy,
           "--set", f"storage={storage}", "--set", f"name={space.stem}_{strategy}", "--progress", "30", *extra]
    print("$ " + " ".join(cmd[1:]), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    for line in proc.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if line.strip():
            print("  " + line.rstrip(), flush=True)
    if proc.wait() != 0:
        raise RuntimeError(f"search_study: {strategy} search exited {proc.returncode}:\n{''.join(lines[-20:])}")
    return Path(re.search(r"-> (\S+)", "".join(lines)).group(1))  # type: ignore[union-attr]


def operator_of(point: Point) -> str:
    """The single operator of a uniform trial's genome summary, e.g. ``dense_1:kmeans(k=4) ...`` -> kmeans."""
    ops = set(re.findall(r":(\w+)\(", point.genome))
    return ops.pop() if len(ops) == 1 else "dense"


def describe(label: str, points: list[Point], reference: float, budget: int | None) -> dict[str, object]:
    """Hypervolume and headline numbers of one set of points (accuracy metric)."""
    best = max((p.metric for p in points if budget is None or p.size <= budget), default=float("nan"))
    top = max((p.metric for p in points), default=float("nan"))
    near = [p.ratio for p in points if p.metric >= top - 0.01]
    return {"strategy": label, "points": len(points), "front": len(front(points)),
            "hypervolume": round(hypervolume(points, reference), 5), "best_accuracy_in_budget": round(best, 4),
            "smallest_ratio_within_1pt": round(min(near), 4) if near else ""}


def plot(fronts: dict[str, list[Point]], budget_ratio: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for label, pts in fronts.items():
        ax.step([p.ratio for p in pts], [p.metric for p in pts], where="post", marker="o", ms=4, label=label)
    if budget_ratio:
        ax.axvline(budget_ratio, color="grey", ls="--", lw=1, label=f"budget ({budget_ratio:g} of dense)")
    ax.set_xscale("log")
    ax.set_xlabel("size / dense size (log)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits_mlp.yaml instead of fashion_mlp.yaml")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every search as --set (the same for all strategies)")
    parser.add_argument("--keep", action="store_true",
                        help="re-read a strategy's finished run (one with timing.json) instead of searching again")
    parser.add_argument("--yaml-steps", action="store_true", help="fashion_mlp.yaml's own population and steps")
    args = parser.parse_args()
    space = ROOT / "search_spaces" / ("digits_mlp.yaml" if args.quick else "fashion_mlp.yaml")
    if not args.quick and not args.yaml_steps:
        args.extra = [*HALF, *args.extra]
    stem = "search_study" + ("_quick" if args.quick else "_yaml" if args.yaml_steps else "")
    storage = ROOT / "mutate_runs" / stem
    extra = [x for kv in args.extra for x in ("--set", kv)]
    t0 = time.perf_counter()
    rows: list[dict[str, object]] = []
    fronts: dict[str, list[Point]] = {}
    runs = {}
    for strategy in STRATEGIES:
        run_dir = storage / f"{space.stem}_{strategy}"
        if args.keep and read_timing(run_dir) is not None:  # finished earlier: re-read it
            print(f"kept {run_dir} (finished earlier)", flush=True)
        else:
            run_dir = search(space, strategy, storage, extra)
            print(f"[{time.perf_counter() - t0:6.0f}s] {strategy} done: {run_dir}", flush=True)
        runs[strategy] = (load_run(run_dir), read_timing(run_dir))
    for strategy, (run, timing) in runs.items():
        pts, budget = run.points(), run.budget_bytes()
        trials = len({p.trial for p in pts})
        groups = {strategy: pts}
        if strategy == "uniform":
            by_op: dict[str, list[Point]] = {}
            for p in pts:
                by_op.setdefault(operator_of(p), []).append(p)
            by_op.pop("dense", None)
            for op, op_pts in sorted(by_op.items()):
                rows.append({**describe(f"uniform:{op}", op_pts, run.reference_metric, budget), "trials":
                             len({p.trial for p in op_pts}), "run_dir": run.dir.name})
            best = max(by_op, key=lambda op: hypervolume(by_op[op], run.reference_metric))
            groups[f"best uniform single method ({best})"] = by_op[best]
        for label, g in groups.items():
            fronts[label] = front(g)
        rows.append({**describe(strategy, pts, run.reference_metric, budget), "trials": trials,
                     "run_dir": run.dir.name, "wall_s": round(timing["wall_s"]),
                     "overhead_pct": round(timing["overhead_pct"])})
    with (HERE / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with (HERE / f"{stem}_fronts.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["front", "bytes", "ratio", "accuracy", "genome"])
        for label, pts in fronts.items():
            writer.writerows([label, p.size, p.ratio, p.metric, p.genome] for p in pts)
    run = runs["pbt"][0]
    budget = run.budget_bytes()
    plot(fronts, budget / run.dense_bytes if budget and run.dense_bytes else None, HERE / f"{stem}.png",
         f"{space.name}: fronts at an equal trial budget")
    print(f"\n{'strategy':<30} {'trials':>6} {'points':>6} {'front':>5} {'hypervolume':>11} {'best in budget':>14}")
    for r in rows:
        print(f"{r['strategy']:<30} {r['trials']:>6} {r['points']:>6} {r['front']:>5} {r['hypervolume']:>11} "
              f"{r['best_accuracy_in_budget']:>14}")
    print(f"rows in {stem}.csv, fronts in {stem}.png; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
