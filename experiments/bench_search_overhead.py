"""Ray overhead of the search: trial compute against wall time (a benchmark, not a test).

    .venv/bin/python experiments/bench_search_overhead.py                 # digits_mlp.yaml at 1200 and 4800 steps
    .venv/bin/python experiments/bench_search_overhead.py --steps 1200    # the README's main job only
    .venv/bin/python experiments/bench_search_overhead.py --analyse mutate_runs/bench_overhead/digits_mlp-*

Runs ``mutate search search_spaces/digits_mlp.yaml`` (PBT, population 4, 1 CPU per trial) once per trial
length and reads the summary line the search prints: the wall time, the summed trial compute (the
``time_this_iter_s`` of every report: training and evaluation), and the parallel slots. Overhead is
``wall - compute / slots`` as a share of wall: Ray's start-up (counted in full, although it now runs while the
driver measures the sensitivity table), the actors' start with the TensorFlow import, data loading, model
builds, checkpoints and PBT exploits. The second line of each row is the job's total (sensitivity table,
Ray, test set). Writes ``bench_search_overhead.txt``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(steps: int) -> str:
    """One search of ``steps`` per trial (reports every steps/24); returns its summary line."""
    cmd = [sys.executable, "-m", "mutate.cli", "search", str(ROOT / "search_spaces" / "digits_mlp.yaml"),
           "--set", f"training.steps={steps}", "--set", f"storage={ROOT / 'mutate_runs' / 'bench_overhead'}",
           "--set", f"search.perturbation_interval={steps // 6}", "--set", f"training.report_every={steps // 24}",
           "--set", f"mutations.warmup_steps={steps // 4}", "--progress", "60"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith("search done")), None)
    total = next((x.strip() for x in out.stdout.splitlines() if "before and after Ray" in x), "")
    actors = next((x.strip() for x in out.stdout.splitlines() if "actor(s) started" in x), "")
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"bench_search_overhead: search exited {out.returncode}: {out.stdout[-2000:]}")
    return f"{line}\n        {actors}\n        {total}"


def analyse(run_dir: Path, slow: float = 0.6) -> str:
    """Where a finished run's time went, from its points.jsonl: reports slower than ``slow`` seconds (a
    retrace after a mutation, splice or exploit), when the first report arrived, the slot-seconds no
    trial was computing (two slots), and how many actor processes reported."""
    import json

    import numpy as np

    rows = [json.loads(line) for line in (run_dir / "points.jsonl").read_text().splitlines()]
    t = np.array([r["time_this_iter_s"] for r in rows])
    end = np.array([r["wall_s"] for r in rows])
    grid = np.arange(0.0, end.max(), 0.1)
    busy = np.zeros_like(grid)
    for a, b in zip(end - t, end):
        busy[(grid >= a) & (grid < b)] += 1
    idle = float(((2 - np.minimum(busy, 2)) * 0.1).sum())
    pids = {r["pid"] for r in rows if "pid" in r}  # points record their actor's pid since this session
    actors = f"; {len(pids)} actor process(es)" if pids else ""
    return (f"{run_dir.name}: {len(rows)} reports, {int((t > slow).sum())} over {slow} s ({t[t > slow].sum():.0f} of "
            f"{t.sum():.0f} s of compute); first report at {end.min():.1f} s; {idle:.0f} idle slot-seconds of "
            f"{2 * end.max():.0f}{actors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1200, 4800])
    parser.add_argument("--analyse", type=Path, nargs="+", metavar="RUN_DIR",
                        help="only print where the time of these finished runs went")
    args = parser.parse_args()
    if args.analyse:
        print("\n".join(analyse(d) for d in args.analyse))
        return
    lines = []
    for steps in args.steps:
        line = run(steps)
        pct = re.search(r"\((-?\d+)% of wall\)", line).group(1)  # type: ignore[union-attr]
        lines.append(f"{steps:>5} steps per trial: {line}  -> overhead {pct}% (target at most 10%)")
        print(lines[-1], flush=True)
    (HERE / "bench_search_overhead.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
