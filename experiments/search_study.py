"""The four search strategies at an equal trial budget, chosen on validation and reported on test.

    .venv/bin/python experiments/search_study.py --spaces digits_mlp --seeds 0 1 2      # ~12 min on 2 cores
    .venv/bin/python experiments/search_study.py --spaces experiments/spaces/sepnet.yaml --seeds 0 1 --tag sepnet
    .venv/bin/python experiments/search_study.py                                         # all three spaces
    .venv/bin/python experiments/search_study.py --spaces fashion_mlp --set training.steps=3000 \
        --set mutations.warmup_steps=1000 --set search.perturbation_interval=500 --tag half

For each space (``search_spaces/NAME.yaml`` as written, plus any ``--set``) and each seed (``search.seed``),
runs ``mutate search`` once per strategy with the same population, steps and seed:

- ``pbt``: population-based training, first population from greedy's solutions, informed explore;
- ``greedy``: the sensitivity table's cheapest genomes under the budget, trained, no explore;
- ``uniform``: one operator at one level on every layer, among the combinations that fit the budget;
- ``random``: whole random genomes at random steps;
- ``pbt_random_start`` (on request): PBT whose first population is one random mutation per trial;
- ``pbt_fixed_lr`` (on request): PBT whose explore does not perturb the learning rate;
- ``pbt_niches`` / ``pbt_one_niche`` (on request): PBT with ``search.budget_fractions`` ``[1.0, 0.5, 0.25]`` /
  ``[1.0]`` (the default ``auto`` is the first for populations of 8 or more);
- ``pbt_no_hedge`` (on request): PBT seeded with greedy's top solutions only (``search.hedge: false``);
- ``pbt_burn_in`` (on request): PBT that exploits no trial before its warm-up and first blend window end
  (``search.burn_in_steps: auto``);
- ``pbt_copies1`` / ``pbt_copies2`` (on request): PBT whose explore copies no genome that 1 / 2 other members
  already hold, taking the cheapest cut per byte instead (``search.max_copies``; 1 is the default since
  2026-12-03, so ``pbt`` and ``pbt_copies1`` now run the same search);
- ``pbt_no_cap`` (on request): PBT without that cap (``search.max_copies: null``, the default before).

Per run: the **validation**-selected winner (the front point with the best validation accuracy within the
budget), its **test** accuracy (evaluated once, after the search) and size; the hypervolume of the
validation-chosen front measured with its test accuracies; wall time. Per (space, strategy): mean and spread
(min-max) over seeds. Writes ``search_study[_TAG].csv`` (one row per run), ``search_study[_TAG]_summary.csv``,
``search_study[_TAG]_fronts.csv`` (every run's validation front, with test accuracies) and
``search_study[_TAG].png`` next to this script; the runs go to ``mutate_runs/search_study[_TAG]/``.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from mutate import load_run  # noqa: E402
from mutate.results.runs import read_timing  # noqa: E402

STRATEGIES = ("pbt", "greedy", "uniform", "random", "pbt_random_start", "pbt_fixed_lr", "pbt_niches",
              "pbt_one_niche", "pbt_two_niches", "pbt_no_hedge", "pbt_burn_in", "pbt_copies1", "pbt_copies2",
              "pbt_no_cap")
VARIANTS = {"pbt_random_start": ("pbt", ["search.seed_greedy=false"]),
            "pbt_no_hedge": ("pbt", ["search.hedge=false"]),
            "pbt_fixed_lr": ("pbt", ["search.learning_rate_factors=[]"]),
            "pbt_niches": ("pbt", ["search.budget_fractions=[1.0, 0.5, 0.25]"]),
            "pbt_one_niche": ("pbt", ["search.budget_fractions=[1.0]"]),
            "pbt_two_niches": ("pbt", ["search.budget_fractions=[1.0, 0.5]"]),
            "pbt_burn_in": ("pbt", ["search.burn_in_steps=auto"]),
            "pbt_copies1": ("pbt", ["search.max_copies=1"]),
            "pbt_copies2": ("pbt", ["search.max_copies=2"]),
            "pbt_no_cap": ("pbt", ["search.max_copies=null"])}
"""Study labels that run a strategy with other settings: PBT whose first population is one random mutation
per trial (the question: does seeding PBT with greedy's solutions help?); PBT whose explore leaves the
learning rate alone (does perturbing it help?); PBT with niches at 1/2 and 1/4 of the budget, and PBT with
the budget's niche only (does covering the front below the budget give the largest hypervolume, and at what
cost at the budget? ``auto``, the default, is the first for populations of 8 or more)."""
SPACES = ("digits_mlp", "fashion_mlp", "fashion_cnn")
FIELDS = ["space", "seed", "strategy", "run_dir", "points", "winner_val", "winner_test", "winner_ratio",
          "winner_genome", "test_hypervolume", "val_hypervolume", "wall_s", "overhead_pct"]


def search(space: Path, label: str, seed: int, storage: Path, extra: list[str]) -> Path:
    """Run ``mutate search`` in a child process; returns the run dir."""
    strategy, settings = VARIANTS.get(label, (label, []))
    cmd = [sys.executable, "-m", "mutate.cli", "search", str(space), "--strategy", strategy,
           "--set", f"storage={storage}", "--set", f"name={space.stem}_s{seed}_{label}",
           "--set", f"search.seed={seed}", "--progress", "60", *extra,
           *[x for kv in settings for x in ("--set", kv)]]
    print("$ " + " ".join(cmd[3:]), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"search_study: {strategy} search exited {proc.returncode}:\n{proc.stdout[-3000:]}")
    return Path(re.search(r"-> (\S+)", proc.stdout).group(1))  # type: ignore[union-attr]


def describe(run_dir: Path) -> dict[str, object]:
    """The validation-selected winner under the budget and the test hypervolume of the validation front."""
    run = load_run(run_dir)
    win = run.best_under_budget()
    timing = read_timing(run_dir) or {}
    return {"run_dir": run.dir.name, "points": len(run.points()),
            "winner_val": round(win.metric, 4) if win else "", "winner_test": round(win.test, 4) if win else "",
            "winner_ratio": round(win.ratio, 4) if win else "", "winner_genome": win.genome if win else "",
            "test_hypervolume": round(run.test_hypervolume() or 0.0, 5), "val_hypervolume": round(run.hypervolume(), 5),
            "wall_s": round(timing.get("wall_s", 0)), "overhead_pct": timing.get("overhead_pct", "")}


def front_rows(run_dir: Path, space: str, seed: int, strategy: str) -> list[dict[str, object]]:
    """The validation-chosen front of one run, each point with its validation and test accuracy."""
    run = load_run(run_dir)
    return [{"space": space, "seed": seed, "strategy": strategy, "bytes": p.size, "ratio": round(p.ratio, 5),
             "val_accuracy": round(p.metric, 4), "test_accuracy": "" if p.test is None else round(p.test, 4),
             "genome": p.genome} for p in run.pareto_front()]


def summarise(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Mean and min-max over seeds per (space, strategy); a run with no model in budget counts as missing."""
    out = []
    for space in dict.fromkeys(r["space"] for r in rows):
        for strategy in STRATEGIES:
            group = [r for r in rows if r["space"] == space and r["strategy"] == strategy]
            if not group:
                continue
            tests = [float(r["winner_test"]) for r in group if r["winner_test"] != ""]
            hvs = [float(r["test_hypervolume"]) for r in group]
            ratios = [float(r["winner_ratio"]) for r in group if r["winner_ratio"] != ""]
            out.append({"space": space, "strategy": strategy, "runs": len(group), "in_budget": len(tests),
                        "winner_test_mean": round(statistics.mean(tests), 4) if tests else "",
                        "winner_test_min": round(min(tests), 4) if tests else "",
                        "winner_test_max": round(max(tests), 4) if tests else "",
                        "winner_ratio_mean": round(statistics.mean(ratios), 4) if ratios else "",
                        "test_hv_mean": round(statistics.mean(hvs), 5), "test_hv_min": round(min(hvs), 5),
                        "test_hv_max": round(max(hvs), 5),
                        "wall_s_mean": round(statistics.mean(float(r["wall_s"]) for r in group))})
    return out


def plot(summary: list[dict[str, object]], path: Path) -> None:
    """Per space: each strategy's winner test accuracy (mean, min-max bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(dict.fromkeys(s["space"] for s in summary))
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.2 * len(spaces), 3.8), dpi=120, squeeze=False)
    for ax, space in zip(axes[0], spaces):
        rows = [s for s in summary if s["space"] == space and s["winner_test_mean"] != ""]
        xs = range(len(rows))
        means = [float(s["winner_test_mean"]) for s in rows]
        lo = [m - float(s["winner_test_min"]) for m, s in zip(means, rows)]
        hi = [float(s["winner_test_max"]) - m for m, s in zip(means, rows)]
        ax.bar(xs, means, yerr=[lo, hi], capsize=4,
               color=["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"][:len(rows)])
        ax.set_xticks(list(xs), [f"{str(s['strategy']).replace('_', chr(10), 1)}\n({s['in_budget']}/{s['runs']} fit)"
                                 for s in rows], fontsize=7)
        if means:
            ax.set_ylim(min(m - e for m, e in zip(means, lo)) - 0.02, max(m + e for m, e in zip(means, hi)) + 0.01)
        ax.set_title(space, fontsize=9)
        ax.set_ylabel("test accuracy of the validation-chosen winner")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", nargs="+", default=list(SPACES),
                        help="search_spaces/NAME.yaml stems, or paths to YAML files (named by their stem)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES[:4]), choices=STRATEGIES,
                        help="strategies to run (default: the four; pbt_random_start is PBT without greedy seeding)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every search as --set (the same for all strategies)")
    parser.add_argument("--tag", default="", help="suffix of the output files and run folder")
    parser.add_argument("--keep", action="store_true", help="re-read finished runs instead of searching again")
    parser.add_argument("--only-finished", action="store_true",
                        help="with --keep: leave out a (seed, strategy) with no finished run instead of searching it "
                             "(the tables then hold only what ran, e.g. when studies ran in separate processes)")
    args = parser.parse_args()
    stem = "search_study" + (f"_{args.tag}" if args.tag else "")
    storage = ROOT / "mutate_runs" / stem
    extra = [x for kv in args.extra for x in ("--set", kv)]
    t0 = time.perf_counter()
    rows: list[dict[str, object]] = []
    fronts: list[dict[str, object]] = []
    for given in args.spaces:
        space = Path(given).resolve() if given.endswith((".yaml", ".yml")) else ROOT / "search_spaces" / f"{given}.yaml"
        name = space.stem
        for seed in args.seeds:
            for strategy in args.strategies:
                run_dir = storage / f"{name}_s{seed}_{strategy}"
                done = [d for d in [run_dir, *storage.glob(f"{name}_s{seed}_{strategy}-*")]
                        if d.is_dir() and read_timing(d) is not None]  # a stopped run left NAME, a rerun NAME-2
                if args.keep and done:
                    run_dir = max(done, key=lambda d: (d / "timing.json").stat().st_mtime)
                elif args.keep and args.only_finished:
                    print(f"{name} seed {seed} {strategy}: no finished run in {storage}, left out", flush=True)
                    continue
                else:
                    run_dir = search(space, strategy, seed, storage, extra)
                row = {"space": name, "seed": seed, "strategy": strategy, **describe(run_dir)}
                rows.append(row)
                fronts += front_rows(run_dir, name, seed, strategy)
                print(f"[{time.perf_counter() - t0:6.0f}s] {name} seed {seed} {strategy}: winner test "
                      f"{row['winner_test']} at {row['winner_ratio']} of dense (val {row['winner_val']}); test HV "
                      f"{row['test_hypervolume']}; {row['wall_s']}s", flush=True)
    with (HERE / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    with (HERE / f"{stem}_fronts.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(fronts[0]))
        writer.writeheader()
        writer.writerows(fronts)
    summary = summarise(rows)
    with (HERE / f"{stem}_summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    plot(summary, HERE / f"{stem}.png")
    print(f"\n{'space':<14}{'strategy':<18}{'fit':>5}{'winner test (min-max)':>26}{'ratio':>8}{'test HV':>9}{'wall s':>8}")
    for s in summary:
        rng = f"{s['winner_test_mean']} ({s['winner_test_min']}-{s['winner_test_max']})" if s["in_budget"] else "none"
        print(f"{s['space']:<14}{s['strategy']:<18}{str(s['in_budget']) + '/' + str(s['runs']):>5}{rng:>26}"
              f"{s['winner_ratio_mean']!s:>8}{s['test_hv_mean']:>9}{s['wall_s_mean']:>8}")
    print(f"rows in {stem}.csv and {stem}_summary.csv, plot {stem}.png; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
