"""The work behind each CLI command (kept apart from argument parsing so tests can call it).

Once a command knows its run directory, an exception other than `mutate.errors.BadInput` leaving it
carries that directory as ``mutate_run_dir``; the CLI saves the traceback there (`RUN_DIR_ATTR`).
"""

from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from mutate.results import runs as rundirs

from mutate.search import space as spaces
from mutate.errors import BadInput, interrupted

RUN_DIR_ATTR = "mutate_run_dir"
"""Attribute set on an internal error raised while a command worked on a run directory (its absolute path)."""


@contextlib.contextmanager
def _run_dir_context(run_dir: Path) -> Iterator[None]:
    """Tag any exception but `BadInput` leaving the block with ``run_dir`` (the innermost tag wins)."""
    try:
        yield
    except BadInput:
        raise
    except Exception as e:
        if getattr(e, RUN_DIR_ATTR, None) is None:
            with contextlib.suppress(AttributeError, TypeError):  # an exception class with __slots__
                setattr(e, RUN_DIR_ATTR, Path(run_dir))
        raise


def _if_run(folder: Path) -> ContextManager[None]:
    """`_run_dir_context` for ``folder`` when it is a run directory; otherwise nothing (never write elsewhere)."""
    folder = Path(folder).resolve()
    return _run_dir_context(folder) if (folder / rundirs.SPACE_FILE).is_file() else contextlib.nullcontext()


def search(path: Path | None, *, overrides: list[str] = (), strategy: str | None = None,  # type: ignore[assignment]
           address: str | None = None, resume: Path | None = None, verbose: bool = False,
           progress: float = 10.0) -> Path:
    """``mutate search``: validate, run (or resume) the search, then print the front. Returns the run dir.

    A trial that fails (after ``search.max_failures`` retries) is listed on one line with its reason; the
    others' points and the front are kept.

    Raises:
        BadInput: the space is invalid or does not fit its model (before anything is written), or ``resume``
            is not a run directory.
        SearchFailed: every trial failed (after printing the reasons and whatever front their points make).
    """
    from mutate.search import policy
    from mutate.cli import quiet_tensorflow_import

    if resume is not None and (overrides or strategy):
        raise BadInput(f"{resume}: --set and --strategy cannot be combined with --resume (a resumed search "
                       "continues with the space it was started with)")
    if resume is None:  # the YAML is checked before anything heavy is imported: a typo costs no TF import
        extra = [f"search.strategy={strategy}"] if strategy else []
        space = spaces.load(path, [*overrides, *extra],  # type: ignore[arg-type]
                            check_operator=policy.check_operator)
    if resume is not None:
        _resume_backend(Path(resume))
    quiet_tensorflow_import(verbose)
    from mutate.search import driver

    created = None  # the storage folder this search makes (removed again when the run leaves nothing)
    if resume is None:
        prepared = driver.prepare(space)
        import keras

        created = next((p for p in reversed([space.storage, *space.storage.parents]) if not p.exists()), None)
        run_dir = rundirs.prepare_run_dir(space, classes=prepared.classes, backend=keras.backend.backend())
    else:
        run_dir = Path(resume).resolve()
        space = rundirs.load_recorded_space(run_dir)
        limit, timing = space.search["time_budget_s"], rundirs.read_timing(run_dir)
        rundirs.read_spent(run_dir)  # damaged: one line now, not after a session of training
        spent = timing.get("spent_s", timing.get("wall_s", 0)) if timing is not None else 0
        if limit is not None and timing is not None and spent >= limit:
            raise BadInput(f"{run_dir}: this search stopped at its time budget (search.time_budget_s: {limit:g} s, "
                           f"{spent:g} s spent); Ray Tune restores the spent budget, so a resume would "
                           "train nothing: start a new search with a larger search.time_budget_s")
        if timing is not None and not timing.get("failed", 0) and not timing.get("unfinished", 0):
            raise BadInput(f"{run_dir}: this search finished (its timing.json records no failed or unfinished trial): "
                           f"nothing to resume; `mutate pareto {shlex.quote(str(run_dir))}` shows its front")
        began = rundirs.started_in(run_dir)
        if began is not None and began.resolve() != run_dir:
            raise BadInput(f"{run_dir}: this run was started in {began}, which Ray Tune's state and its trials "
                           "name: a resume would write there. Resume it in that folder (move it back); "
                           "`mutate pareto` and `mutate export` read a run anywhere.")
        rundirs.check_search_state(run_dir)
    with _run_dir_context(run_dir):
        if resume is not None:
            prepared = driver.prepare(space)
        from mutate.search import runner

        try:
            return _run(space, run_dir, prepared, resume=resume is not None, address=address, verbose=verbose,
                        progress=progress)
        except BaseException as e:  # after the run directory existed (no Ray cluster there, a Ctrl-C)
            if (isinstance(e, BadInput) or interrupted(e)) and resume is None and not rundirs.read_points(run_dir):
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)  # nothing half-written: no trial ran
                if created is not None:
                    rundirs.remove_empty(space.storage, created)
            raise
        finally:
            runner.stop_ray()


def _session_end(run_dir: Path, summary: dict[str, Any], limit: float | None, spent_before: float,
                 resume: bool) -> float:
    """After Ray Tune's run: the seconds this search spent in it over all its sessions (Tune counts
    ``search.time_budget_s`` over them; ``spent_before``: the earlier sessions'). Unfinished trials after a
    signal (Ctrl-C) mean an interrupt: the spent time is recorded for a resume and KeyboardInterrupt raised
    (no test evaluation); without one, Tune stopped at the time budget and a line says so (the time recorded
    is then at least the budget, whatever an earlier session killed outright left in ``spent.txt``).

    Raises:
        KeyboardInterrupt: the search was interrupted (a fresh one with no point is removed by `search`).
    """
    unfinished = summary.get("unfinished", 0)
    spent = spent_before + summary["wall_s"]
    interrupted = summary.get("interrupted")
    if interrupted is None:  # not known (a search run off the main thread): the clock decides
        interrupted = not (limit is not None and spent >= limit)
    if unfinished and (interrupted or limit is None):
        if not resume and not summary["points"]:
            print(f"\ninterrupted before any trial reported: nothing kept ({run_dir} is removed)", flush=True)
        else:
            rundirs.write_spent(run_dir, spent)
            print(f"\ninterrupted: {unfinished} of {summary['trials']} trials unfinished, {summary['points']} "
                  f"points kept; `mutate search --resume {shlex.quote(str(run_dir))}` continues it", flush=True)
        raise KeyboardInterrupt
    if unfinished:
        spent = max(spent, float(limit))
        print(f"\nstopped by search.time_budget_s ({limit:g} s, {spent:.0f} s spent): {unfinished} of "
              f"{summary['trials']} trials unfinished; the front below is of what they reported", flush=True)
    return spent


def _resume_backend(run_dir: Path) -> None:
    """A resumed search runs on the Keras backend its run recorded: chosen here when nothing chose one yet
    (``KERAS_BACKEND`` unset, Keras not imported); a different one is refused (the trials would mix backends).

    Raises:
        BadInput: this process runs (or is told to run) Keras on another backend.
    """
    import json
    import os
    import sys

    try:
        recorded = json.loads((run_dir / rundirs.SPACE_FILE).read_text()).get("backend")
    except (OSError, ValueError, AttributeError):
        return  # not a run, or a damaged one: load_recorded_space says so in its own words
    if not recorded:
        return  # runs of earlier versions did not record it
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
    else:
        current = os.environ.get("KERAS_BACKEND")
        if current is None:
            os.environ["KERAS_BACKEND"] = recorded
            return
    if current != recorded:
        raise BadInput(f"{run_dir}: the search ran on Keras' {recorded} backend and this process runs {current}; "
                       f"resume it with KERAS_BACKEND={recorded}")


def run_search(space: str | Path | None = None, *, overrides: dict[str, Any] | list[str] | None = None,
               strategy: str | None = None, address: str | None = None, resume: str | Path | None = None,
               verbose: bool = False, progress: float = 10.0) -> Any:
    """Run a search from Python (a notebook, a script): what ``mutate search`` does, returning its `Run`.

    Args:
        space: the search space's YAML file (None with ``resume``).
        overrides: keys of the space to change, as ``{"search.population": 8, "model.hidden": [64, 32]}``
            (a nested mapping, ``{"search": {"population": 8}}``, sets the keys it names and keeps the
            section's others; paths and NumPy values are taken as their text and Python values) or as
            ``--set`` strings (``["search.population=8"]``).
        strategy: ``pbt``, ``greedy``, ``random`` or ``uniform`` (overrides ``search.strategy``).
        address: join a Ray cluster (``auto`` or ``HOST:PORT``); None starts an embedded Ray.
        resume: a run directory to continue (no ``space``, ``overrides`` or ``strategy`` then).
        progress: seconds between progress lines (0: none).

    Returns:
        `mutate.Run` of the run directory: ``run.points()``, ``run.pareto_front()``, ``run.export(...)``.

    Raises:
        BadInput: the space or an argument is invalid (nothing is written).
        SearchFailed: every trial failed.
        KeyboardInterrupt: the search was interrupted (Ctrl-C); ``run_search(resume=RUN_DIR)`` continues it.
    """
    import json

    from mutate.results.report import Run

    if isinstance(overrides, dict):
        sets = [f"{k}={json.dumps(v, default=_plain(k))}"  # JSON is YAML: the values keep their types
                for k, v in _dotted(overrides)]
    elif overrides is None:
        sets = []
    elif isinstance(overrides, (list, tuple)) and all(isinstance(o, str) for o in overrides):
        sets = list(overrides)
    else:
        raise BadInput(f"overrides={overrides!r}: give a dict of key paths to values or a list of "
                       "'KEY.PATH=VALUE' strings")
    if (space is None) == (resume is None):
        raise BadInput("run_search: give a space's YAML file, or resume=RUN_DIR (not both)")
    with _caller_state():
        run_dir = search(None if space is None else Path(space), overrides=sets, strategy=strategy,
                         address=address, resume=None if resume is None else Path(resume), verbose=verbose,
                         progress=progress)
    return Run(run_dir)


_CALLER_ENV = ("KERAS_BACKEND", "PYTHONPATH", "PYTHONBREAKPOINT", "RAY_CHDIR_TO_TRIAL_DIR", "RAY_AIR_NEW_OUTPUT",
               "RAY_DEDUP_LOGS", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
"""Environment variables a search sets for its trials (or Ray sets in the driver: a debugger hook) and
`run_search` puts back as the caller had them."""

@contextlib.contextmanager
def _caller_state() -> Iterator[None]:
    """Leave a notebook's process as the search found it: the random states the search seeds (Python's and
    NumPy's global generators, Keras' global seed) and the environment variables in `_CALLER_ENV` (Ray's
    loggers, silenced while a quiet search runs, get their levels back when its Ray stops). TensorFlow's
    global seed stays the search's (TensorFlow cannot read it back)."""
    import os
    import random

    import numpy as np

    env = {k: os.environ.get(k) for k in _CALLER_ENV}
    py, npy = random.getstate(), np.random.get_state()
    seeds = _keras_seed_state()
    try:
        yield
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        random.setstate(py)
        np.random.set_state(npy)
        seeds()


def _keras_seed_state() -> Callable[[], None]:
    """A function putting back Keras' global seed and seed generator (what `keras.utils.set_random_seed`
    replaces) as they are now: unset when Keras is not imported yet (it is not imported here). Nothing is
    put back with a Keras that keeps them elsewhere."""
    import sys

    def attributes() -> tuple[Any, tuple[str, str]] | None:
        try:
            from keras.src.backend.common import global_state
            from keras.src.random import seed_generator
            from keras.src.utils import rng_utils
        except ImportError:  # another Keras layout
            return None
        return global_state, (rng_utils.GLOBAL_RANDOM_SEED, seed_generator.GLOBAL_SEED_GENERATOR)

    found = attributes() if "keras" in sys.modules else None
    values = [found[0].get_global_attribute(n) for n in found[1]] if found is not None else [None, None]

    def put_back() -> None:
        now = attributes() if "keras" in sys.modules else None
        if now is not None:
            for name, value in zip(now[1], values):
                now[0].set_global_attribute(name, value)

    return put_back


def _dotted(overrides: dict[Any, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"search": {"population": 8}}`` as ``[("search.population", 8)]``: a nested mapping sets the keys it
    names and keeps the section's others (as ``--set search.population=8`` does)."""
    out: list[tuple[str, Any]] = []
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise BadInput(f"overrides: key {key!r} is not a key path such as 'search.population'")
        if isinstance(value, dict) and value:
            out += _dotted(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _plain(key: str) -> Any:
    """JSON's fallback for an override's value: a path as its text, NumPy scalars and arrays as Python's."""
    def convert(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if hasattr(value, "tolist") and callable(value.tolist):  # np.int64(8), np.array([64, 32])
            return value.tolist()
        if isinstance(value, (set, frozenset, tuple)):
            return list(value)
        raise BadInput(f"overrides: {key}={value!r}: not a value a YAML space can hold ({type(value).__name__})")
    return convert


def _run(space: spaces.Space, run_dir: Path, prepared: tuple, *, resume: bool,
         address: str | None, verbose: bool, progress: float) -> Path:
    """The search proper, once the space is checked and the run directory exists; see `search`."""
    import sys
    import time

    from mutate.search import runner

    console = sys.stdout
    allowed, budget, dense_bytes, _, sizes, kernels = prepared
    s = space.search
    print(f"mutate search: {space.name} ({s['strategy']}, population {s['population']}, "
          f"{space.training['steps']} steps per trial) -> {run_dir}")
    print("  compressible kernels (path, layer kind, kernel shape as the m x n matrix the operators factor):")
    for line in kernels:
        print(f"    {line}")
    lite = None
    if space.budget.get("unit") == "litert":  # the budget is of LiteRT files: the dense model's, as trials measure it
        from mutate.search.trial import TrialRunner

        lite = TrialRunner(space, seed=s["seed"] * 1000)
        budget = lite.budget
        sizes_line = (f"dense model {dense_bytes:,} B counted, its LiteRT file {lite.dense_bytes:,} B; budget "
                      f"{budget:,} B of LiteRT file (budget.unit litert)")
    else:
        sizes_line = f"dense model {dense_bytes:,} B; budget {budget:,} B"
    print(f"  {sizes_line}; mutable layers: "
          + ", ".join(f"{k} [{'/'.join(v)}]" for k, v in allowed.items()), flush=True)
    t0 = time.perf_counter()
    out = lambda line: print(line, file=console, flush=True)  # noqa: E731 (Ray's start redirects stdout)
    strategy, sensitivity_s, ray_start_s = _strategy_while_ray_starts(space, run_dir, allowed, budget, sizes,
                                                                      resume, address, verbose, out, lite)
    spent_before = rundirs.read_spent(run_dir) if resume else 0.0
    summary = runner.run(space, run_dir=run_dir, budget=budget, resume=resume, address=address, verbose=verbose,
                         interval=progress, strategy=strategy, out=out, spent_before=spent_before)
    spent = _session_end(run_dir, summary, s["time_budget_s"], spent_before, resume)
    if not summary["points"] and summary.get("unfinished"):  # the budget ended it before any report
        raise space.error("search.time_budget_s", f"{s['time_budget_s']!r}: no trial reported within it (each trial "
                                                  "starts its actor and trains to its first report): nothing kept")
    # the overhead counts Ray's start in full, although it ran while the sensitivity table was measured
    summary["wall_s"] += ray_start_s
    wall, compute = summary["wall_s"], summary["compute_s"]
    slots = summary.get("slots") or runner.slots(space, {})
    overhead_pct = 100 * (1 - compute / slots / max(wall, 1e-9))
    print(f"\nsearch done in {wall:.0f}s: {summary['points']} points; trial compute {compute:.0f}s over {slots} "
          f"parallel slot(s); overhead (wall - compute/slots) {wall - compute / slots:.0f}s "
          f"({round(overhead_pct, 1):.0f}% of wall)")
    setups = summary.get("actor_setup_s") or []
    if setups:
        print(f"  {len(setups)} actor(s) started, {sum(setups) / len(setups):.1f}s each (Keras and its backend "
              f"imported, data loaded, first model built: part of the overhead)")
    failed, trials = summary["failed"], summary["trials"]
    if failed:
        print(f"{len(failed)} of {trials} trials failed (full errors in {run_dir}/trial_*/error.txt):")
        for trial, reason in failed:
            print(f"  trial {trial} failed: {reason}")
    from mutate.results import final

    t1 = time.perf_counter()
    final.evaluate_front(run_dir)
    test_s = time.perf_counter() - t1
    rundirs.write_timing(run_dir, wall_s=wall, compute_s=compute, slots=slots, spent_s=spent, failed=len(failed),
                         unfinished=int(summary.get("unfinished") or 0),
                         sensitivity_s=sensitivity_s,
                         ray_start_s=ray_start_s, test_s=test_s, total_s=time.perf_counter() - t0,
                         **({"actor_setup_s": sum(setups) / len(setups), "actors": len(setups)} if setups else {}))
    print(f"  before and after Ray: sensitivity table {sensitivity_s:.1f}s (while Ray started, {ray_start_s:.1f}s), "
          f"test set {test_s:.1f}s; total {time.perf_counter() - t0:.0f}s")
    kept = rundirs.prune_checkpoints(run_dir)
    print()
    pareto([run_dir])
    disk = rundirs.disk_bytes(run_dir)  # after pareto.* are written (the interactive page is most of a small run)
    print(f"disk: {disk / 2**20:.1f} MiB in {run_dir} ({kept} model checkpoint(s) kept: the validation front)")
    if failed and len(failed) >= trials:
        from mutate.errors import SearchFailed

        raise SearchFailed(f"every trial failed ({len(failed)} of {trials}); the reasons are listed above")
    return run_dir


def _strategy_while_ray_starts(space: spaces.Space, run_dir: Path, allowed: dict[str, list[str]], budget: int,
                               sizes: object, resume: bool, address: str | None, verbose: bool,
                               out: Any, lite: object = None) -> tuple[object, float, float]:
    """`_strategy` (the sensitivity table: warm-up training and evaluations) in a thread while this thread
    starts Ray (process launches and waits, which must run on the main thread). Returns the strategy, the
    table's seconds and Ray's start-up seconds."""
    import threading
    import time

    from mutate.search import runner

    got: dict[str, Any] = {}
    stop = threading.Event()  # Ray refused (e.g. resources the node lacks): end the table at its next batch
    # Ray's start draws from Python's global `random` (a port), as Keras does for every initializer without a
    # seed: the table's model is built before Ray starts, so its weights (and greedy's and PBT's start) are
    # the seed's, not a race's
    built = threading.Event()

    def table() -> None:
        t = time.perf_counter()
        try:
            got["strategy"] = _strategy(space, run_dir, allowed, budget, sizes, resume, out, lite, stop, built)
        except BaseException as e:  # re-raised on the main thread
            got["error"] = e
        finally:
            built.set()
        got["seconds"] = time.perf_counter() - t

    worker = threading.Thread(target=table, name="mutate-sensitivity", daemon=True)
    # NumPy's OpenBLAS on one thread while the table factors layers: Ray starts its processes with fork()
    # (a preexec_fn rules out vfork), and OpenBLAS' fork handler shuts its thread pool down; with the table's
    # SVD inside that pool at the moment, a search once hung before its first trial. Set before the thread
    # starts and restored after it ends (never changed under a running BLAS call).
    with _one_blas_thread():
        worker.start()
        try:
            built.wait()  # (a Ctrl-C here still stops and joins the table's thread)
            if "error" in got:  # the table failed before its model was built: no Ray to start
                raise got["error"]
            t0 = time.perf_counter()
            runner.start_ray(space, run_dir, address, verbose)
            ray_start_s = time.perf_counter() - t0
        except BaseException:
            stop.set()
            raise
        finally:
            worker.join()
    if "error" in got:
        raise got["error"]
    return got["strategy"], got["seconds"], ray_start_s


def _one_blas_thread() -> Any:
    """Limit NumPy's BLAS to one thread (`threadpoolctl`, installed with scikit-learn) for a ``with`` block."""
    import contextlib

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _strategy(space: spaces.Space, run_dir: Path, allowed: dict[str, list[str]], budget: int, sizes: object,
              resume: bool, out: Any = print, lite: object = None, stop: Any = None, built: Any = None) -> object:
    """The search's strategy, with its sensitivity table: ``sizes`` (from `driver.prepare`), its metrics measured
    now when the strategy needs them (stored in the run), or the table a resumed run stored."""
    from mutate.search import sensitivity, strategies, table as tables

    s, mut = space.search, space.mutations
    cls = strategies.STRATEGIES[s["strategy"]]
    table = tables.load(run_dir) if resume else None
    if built is not None and space.budget.get("unit") != "litert" and (table is not None or not cls.needs_metrics):
        built.set()  # no model is built here: Ray may start at once
    if table is None:
        table = sensitivity.measure(space, allowed, sizes, out=out, stop=stop, built=built) if cls.needs_metrics else sizes
        table.save(run_dir)
    overhead = 0
    if space.budget.get("unit") == "litert":
        planned = _litert_plan_budget(space, allowed, budget, table, out, runner=lite)
        budget, overhead = planned, budget - planned
    ctx = strategies.Context(operators=mut["operators"], allowed=allowed, budget=budget, table=table,
                             max_mutations=mut["max_mutations"], warmup_steps=mut["warmup_steps"],
                             steps=space.training["steps"], window=mut["window"], seed=s["seed"],
                             seed_greedy=s["seed_greedy"], hedge=s["hedge"], learning_rate_factors=tuple(s["learning_rate_factors"]),
                             budget_fractions=tuple(s["budget_fractions"]), overhead=overhead,
                             max_copies=s["max_copies"])
    return cls(ctx)


def _litert_plan_budget(space: spaces.Space, allowed: dict[str, list[str]], budget: int, table: object,
                        out: Any = print, *, runner: Any) -> int:
    """``budget.unit: litert``: ``budget`` is of LiteRT files, the strategies plan in counted bytes, and a
    LiteRT file adds its graph (the ops that unpack the arrays). The overhead is measured once, on greedy's
    first genome exported as a trial exports it (by ``runner``, the driver's trial runner that measured the
    dense file), and the strategies plan for the budget less it.

    Raises:
        BadInput: no genome of the space fits the budget less that overhead (it would train dense models).
    """
    from mutate.search import strategies

    def unreachable(planned: int, why: str) -> BadInput:
        key = "budget.bytes" if space.budget["bytes"] is not None else "budget.ratio"
        value = space.budget["bytes"] if space.budget["bytes"] is not None else space.budget["ratio"]
        return space.error(key, f"{value!r}: {budget:,} B of LiteRT file{why} leaves {planned:,} B for the "
                                "arrays, below the smallest model this space can reach (budget.unit litert)")

    cap = space.mutations["max_mutations"]
    sols = strategies.greedy_solutions(table, allowed, budget, 1, max_len=cap)  # type: ignore[arg-type]
    if not sols:
        raise unreachable(budget, "")
    runner.apply(tuple(m.applied(0) for m in sols[0]))
    overhead = max(0, runner.litert_bytes() - table.predicted_bytes(sols[0]))  # type: ignore[attr-defined]
    out(f"  budget.unit litert: greedy's first genome exports {overhead:,} B above its counted bytes (the "
        f"graph); the strategies plan for {budget - overhead:,} B")
    if not strategies.greedy_solutions(table, allowed, budget - overhead, 1, max_len=cap):  # type: ignore[arg-type]
        raise unreachable(budget - overhead, f", less the graph's {overhead:,} B")
    return budget - overhead


def pareto(runs: list[Path], sensitivity: bool = False, sizes: bool = False) -> None:
    """``mutate pareto``: the front as a table, plus pareto.csv/json/png (and .html) in each run dir."""
    from mutate.results import report

    with _if_run(runs[0]) if len(runs) == 1 else contextlib.nullcontext():  # several: no one place to blame
        report.pareto(runs, sensitivity=sensitivity, sizes=sizes)


def export(run: Path, *, point: int | None, max_size: int | None, min_accuracy: float | None, out: Path,
           force: bool, fmt: str | None = None, arrays: str = "smallest") -> None:
    """``mutate export``: rebuild, re-evaluate, splice and save one front point."""
    from mutate.results import export as exporter

    with _if_run(run):
        exporter.export(run, point=point, max_size=max_size, min_accuracy=min_accuracy, out=out, force=force,
                        fmt=fmt, arrays=arrays)
