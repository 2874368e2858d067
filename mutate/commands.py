"""The work behind each CLI command (kept apart from argument parsing so tests can call it)."""

from __future__ import annotations

from pathlib import Path

from mutate import space as spaces


def search(path: Path | None, *, overrides: list[str] = (), strategy: str | None = None,  # type: ignore[assignment]
           address: str | None = None, resume: Path | None = None, verbose: bool = False,
           progress: float = 10.0) -> Path:
    """``mutate search``: validate, run (or resume) the search, then print the front. Returns the run dir.

    A trial that fails (after ``search.max_failures`` retries) is listed on one line with its reason; the
    others' points and the front are kept.

    Raises:
        SpaceError: the space is invalid (before anything is written).
        SearchFailed: every trial failed (after printing the reasons and whatever front their points make).
    """
    import sys

    from mutate import policy, runs
    from mutate.cli import quiet_tensorflow_import

    console = sys.stdout
    if resume is None:  # the YAML is checked before anything heavy is imported: a typo costs no TF import
        extra = [f"search.strategy={strategy}"] if strategy else []
        space = spaces.load(path, [*overrides, *extra],  # type: ignore[arg-type]
                            check_operator=policy.check_operator)
    quiet_tensorflow_import(verbose)
    from mutate import driver, search as runner

    if resume is not None:
        run_dir = Path(resume).resolve()
        space = runs.load_recorded_space(run_dir)
    allowed, budget, dense_bytes, classes = driver.prepare(space)
    if resume is None:
        run_dir = runs.prepare_run_dir(space, classes=classes)
    s = space.search
    print(f"mutate search: {space.name} ({s['strategy']}, population {s['population']}, "
          f"{space.training['steps']} steps per trial) -> {run_dir}")
    print(f"  dense model {dense_bytes:,} B; budget {budget:,} B; mutable layers: "
          + ", ".join(f"{k} [{'/'.join(v)}]" for k, v in allowed.items()), flush=True)
    summary = runner.run(space, run_dir=run_dir, allowed=allowed, budget=budget, resume=resume is not None,
                         address=address, verbose=verbose, interval=progress,
                         out=lambda line: print(line, file=console, flush=True))
    wall, compute = summary["wall_s"], summary["compute_s"]
    slots = max(1, min(s["population"], _cpus() // max(1, int(space.resources["cpus"]))))
    timing = runs.write_timing(run_dir, wall_s=wall, compute_s=compute, slots=slots)
    print(f"\nsearch done in {wall:.0f}s: {summary['points']} points; trial compute {compute:.0f}s over {slots} "
          f"parallel slot(s); overhead (wall - compute/slots) {wall - compute / slots:.0f}s "
          f"({timing['overhead_pct']:.0f}% of wall)")
    failed, trials = summary["failed"], summary["trials"]
    if failed:
        print(f"{len(failed)} of {trials} trials failed (full errors in {run_dir}/trial_*/error.txt):")
        for trial, reason in failed:
            print(f"  trial {trial} failed: {reason}")
    print()
    pareto([run_dir])
    if failed and len(failed) >= trials:
        from mutate.errors import SearchFailed

        raise SearchFailed(f"every trial failed ({len(failed)} of {trials}); the reasons are listed above")
    return run_dir


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pareto(runs: list[Path]) -> None:
    """``mutate pareto``: the front as a table, plus pareto.csv/json/png (and .html) in each run dir."""
    from mutate import report

    report.pareto(runs)


def export(run: Path, *, point: int | None, max_size: int | None, min_accuracy: float | None, out: Path,
           force: bool) -> None:
    """``mutate export``: rebuild, re-evaluate, splice and save one front point."""
    from mutate import export as exporter

    exporter.export(run, point=point, max_size=max_size, min_accuracy=min_accuracy, out=out, force=force)
