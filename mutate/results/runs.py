"""Run directories: the points a search reports, one JSON row per line, appended as it goes. Pure Python.

A row holds: trial, step, genome (list of mutations), genome_summary, bytes, ratio (of the dense model),
accuracy and val_accuracy (or perplexity and val_perplexity), score, fits_budget, checkpoint (a folder
relative to the run directory holding ``model.keras`` and ``state.json``) and timings. A trial that
diverged (NaN/Inf) leaves ``diverged/TRIAL.txt`` with its reason.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any

from mutate import files
from mutate.errors import BadInput, MissingInput
from mutate.search.space import Space, SpaceError, from_dict

POINTS = "points.jsonl"
SPACE_FILE = "space.json"
TIMING = "timing.json"
SPENT = "spent.txt"
"""Seconds of Ray Tune's run the sessions of a search spent (Tune restores that much of
``search.time_budget_s`` on a resume), as JSON. Not ``.json``: a resumed Tune copies the run's ``.json``
files into its staging folder and syncs them back over the run while it runs, which put an earlier record
back over the driver's newer ones."""
SPENT_BEFORE = "spent.json"
"""`SPENT` as the version before wrote it (still read)."""
DIVERGED = "diverged"


def read_record(path: Path, kind: type = dict) -> Any:
    """The JSON of a run's file, or None when it does not exist.

    Raises:
        BadInput: the file is not JSON of ``kind`` (damaged: a copy cut short, an edit), naming it.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: damaged, not JSON ({str(e).splitlines()[0]}); restore it from a copy or delete "
                       "it if it is a cache") from None
    if not isinstance(value, kind):
        raise BadInput(f"{path}: damaged, expected a JSON {'object' if kind is dict else kind.__name__}, got "
                       f"{type(value).__name__}")
    return value


def append_point(run_dir: Path, row: dict[str, Any]) -> None:
    """Append one row and make it durable (flush + fsync), so a killed driver loses no reported point. A torn
    last line (a driver killed mid-write) is ended first: the row appended after it on resume stays its own."""
    path = run_dir / POINTS
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(("\n" if torn else "") + json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def is_number(value: Any) -> bool:
    """Whether a value read from a run's files is a real number (not a bool, a string or null; NumPy scalars
    count, as a table measured in this process holds them)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def read_points(run_dir: Path) -> list[dict[str, Any]]:
    """Every row of a run, in order. A trial may report a step twice (after an exploit rewinds it, or a
    resume repeats it); each report is its own point with its own checkpoint. A torn last line (the driver
    was killed mid-write) is skipped.

    Raises:
        MissingInput: ``run_dir`` is not a run directory (a ``FileNotFoundError`` and a ``BadInput``).
        BadInput: ``points.jsonl`` is not a file, or a row's ``checkpoint`` is not a folder name.
    """
    run_dir = Path(run_dir)
    if not (run_dir / SPACE_FILE).is_file():
        raise MissingInput(f"{run_dir}: not a mutate run directory (no {SPACE_FILE})")
    path = run_dir / POINTS
    if not path.exists():
        return []
    if not path.is_file():
        raise BadInput(f"{path}: not a file: damaged")
    rows: dict[Any, dict[str, Any]] = {}
    text = path.read_text(encoding="utf-8", errors="replace")  # bad bytes: a damaged line
    for i, line in enumerate(text.splitlines()):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict):  # `null`, a number: not a row (skipped as a torn line is)
            continue
        checkpoint = row.get("checkpoint")
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise BadInput(f"{path}: row {i + 1}: checkpoint: {checkpoint!r} is not a folder name: damaged")
        rows[checkpoint or len(rows)] = row
    return list(rows.values())


def record_divergence(run_dir: Path, trial_id: str, reason: str) -> None:
    """Note that ``trial_id`` diverged (NaN/Inf), so a retry of it fails at once instead of repeating the
    same steps from its last checkpoint (``RUN_DIR/diverged/TRIAL.txt``, written atomically)."""
    folder = Path(run_dir) / DIVERGED
    folder.mkdir(exist_ok=True)
    files.atomic(folder / f"{trial_id}.tmp", folder / f"{trial_id}.txt", lambda tmp: tmp.write_text(reason, "utf-8"))


def divergence(run_dir: Path, trial_id: str) -> str | None:
    """The reason recorded by `record_divergence` for ``trial_id``, or None."""
    f = Path(run_dir) / DIVERGED / f"{trial_id}.txt"
    return f.read_text(encoding="utf-8") if f.is_file() else None


def prepare_run_dir(space: Space, classes: int | None = None, backend: str | None = None) -> Path:
    """Create a new run directory ``storage/name`` (``name-2``, ``name-3``... when taken) and record the
    space (and the model's number of classes, for chance level, and the Keras backend) in it. Returns its
    absolute path.

    Two searches started at the same moment with one storage and name get two directories: a directory is
    claimed by linking its ``space.json`` into place, which fails when another process linked one first
    (each writes its own temporary file)."""
    base = (space.storage / space.name).resolve()
    i = 1
    while True:
        run_dir = base if i == 1 else base.with_name(f"{base.name}-{i}")
        i += 1
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):  # a file of that name: taken
            continue
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a read-only place, a file on the way, /proc...
            raise BadInput(f"{space.where}: storage {str(space.storage)!r}: cannot create the run directory "
                           f"{run_dir} ({e.strerror or e})") from None
        if _claim(run_dir, {"space": space.raw, "space_path": str(space.path) if space.path else None,
                            "classes": classes, "backend": backend, "run_dir": str(run_dir)}):
            return run_dir


def _claim(run_dir: Path, record: dict[str, Any]) -> bool:
    """Write ``record`` as ``run_dir/space.json`` unless another process wrote one first (then False)."""
    tmp = run_dir / f".{SPACE_FILE}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        tmp.write_text(json.dumps(record, indent=1))
        try:
            os.link(tmp, run_dir / SPACE_FILE)  # atomic, and refused when the name exists
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: the check above is the guard there
            if (run_dir / SPACE_FILE).exists():
                return False
            tmp.replace(run_dir / SPACE_FILE)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` (included) while they are empty: the storage folders a
    search created for a run that left nothing."""
    for p in [folder, *folder.parents]:
        try:
            p.rmdir()  # only an empty folder
        except OSError:
            return
        if p == top:
            return


def write_timing(run_dir: Path, *, wall_s: float, compute_s: float, slots: int,
                 **extra: float) -> dict[str, float]:
    """Record a finished search's timing in ``RUN_DIR/timing.json`` (atomically) and return it.

    ``wall_s`` is the Ray part of the search (Tuner.fit); ``overhead_pct`` is the share of it not spent in
    trial compute, with the compute spread over the ``slots`` trials that ran in parallel:
    ``100 * (1 - compute_s / slots / wall_s)``. ``extra`` adds other seconds (``sensitivity_s``: the
    sensitivity table, warm-up included, measured while Ray starts; ``ray_start_s``: Ray's start, counted in
    ``wall_s``; ``test_s``: the test set after it; ``total_s``; ``actor_setup_s``: the mean start of the
    ``actors`` that ran trials, imports, data and first model, inside ``wall_s`` and outside ``compute_s``).
    """
    record = {"wall_s": round(wall_s, 1), "compute_s": round(compute_s, 1), "slots": slots,
              "overhead_pct": round(100 * (1 - compute_s / slots / max(wall_s, 1e-9)), 1),
              **{k: v if isinstance(v, int) else round(float(v), 1) for k, v in extra.items()}}
    files.write_text(Path(run_dir) / TIMING, json.dumps(record, indent=1))
    return record


def read_timing(run_dir: Path) -> dict[str, float] | None:
    """The record of `write_timing`, or None for a run that never finished (or predates it)."""
    return read_record(Path(run_dir) / TIMING)  # damaged: one line naming it


def read_spent(run_dir: Path) -> float:
    """Seconds earlier sessions of this search spent in Ray Tune (`SPENT`; 0 for none)."""
    path = Path(run_dir) / SPENT
    if not path.is_file():
        path = Path(run_dir) / SPENT_BEFORE
    record = read_record(path)
    value = record.get("spent_s", 0.0) if record else 0.0
    if not is_number(value) or not math.isfinite(value) or value < 0:
        raise BadInput(f"{path}: damaged, spent_s: {value!r} is not a number of seconds; delete it (a resumed search "
                       "then counts only the sessions after it against search.time_budget_s)")
    return float(value)


def write_spent(run_dir: Path, seconds: float) -> None:
    """Record (atomically) the seconds this search's sessions spent in Ray Tune so far."""
    files.write_text(Path(run_dir) / SPENT, json.dumps({"spent_s": round(seconds, 1)}))


def check_search_state(run_dir: Path) -> None:
    """Before a resume: Ray Tune's state in ``run_dir`` is whole (its newest ``experiment_state-*.json``, the one
    Tune restores, is JSON with its trials; ``tuner.pkl`` is there and not empty). A damaged state made Tune
    restore a search of fewer trials (each failing on its missing config) and the resume then finished it.

    Raises:
        BadInput: a file is missing or damaged, naming it (nothing is changed).
    """
    run_dir = Path(run_dir)
    pickled = run_dir / "tuner.pkl"
    if not pickled.is_file() or pickled.stat().st_size == 0:
        raise BadInput(f"{pickled}: {'empty' if pickled.is_file() else 'missing'}: Ray Tune's record of the search "
                       "is needed to resume it (`mutate pareto` and `mutate export` still read the run)")
    states = sorted(run_dir.glob("experiment_state-*.json"))
    if not states:
        raise BadInput(f"{run_dir}: no experiment_state-*.json: Ray Tune's state of the search is needed to resume "
                       "it (`mutate pareto` and `mutate export` still read the run)")
    state = read_record(states[-1])
    if not isinstance(state.get("trial_data"), list) or not state["trial_data"]:
        raise BadInput(f"{states[-1]}: damaged, no trial_data: Ray Tune would restore a search without its trials; "
                       "restore the file from a copy, or delete it to resume from an earlier state file")


def started_in(run_dir: Path) -> Path | None:
    """The folder a run was started in (``space.json``'s ``run_dir``; for runs recorded before it, the path
    Ray Tune's experiment state names), or None when neither says. Tune's state and every trial's config hold
    that absolute path, so a resume writes there, whatever folder it was given."""
    try:
        recorded = json.loads((Path(run_dir) / SPACE_FILE).read_text(encoding="utf-8")).get("run_dir")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(recorded, str):
        return Path(recorded)
    import re

    for state in sorted(Path(run_dir).glob("experiment_state-*.json"), reverse=True):
        found = re.search(r'run_dir\\*"\s*:\s*\\*"([^"\\]+)\\*"', state.read_text(encoding="utf-8", errors="replace"))
        if found:
            return Path(found.group(1))
    return None


def load_recorded_space(run_dir: Path) -> Space:
    """The space a run directory was started with.

    Raises:
        SpaceError: ``run_dir`` is not a run directory, its ``space.json`` is damaged, or the space in it
            no longer validates.
    """
    f = Path(run_dir) / SPACE_FILE
    if not f.is_file():
        raise SpaceError(f"{run_dir}: not a mutate run directory (no {SPACE_FILE})")
    try:
        record = json.loads(f.read_text(encoding="utf-8"))
        raw, where = record["space"], record.get("space_path")
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # bad JSON or not the layout written here
        raise SpaceError(f"{f}: not a space recorded by mutate ({type(e).__name__}: {e})") from None
    try:
        return from_dict(raw, path=_relocated(where, record.get("run_dir"), Path(run_dir)) if where else None)
    except SpaceError as e:  # its YAML's name alone pointed at a file the user may have fixed since
        raise SpaceError(f"{f}: the space recorded in it is invalid: {e}") from None


def _relocated(space_path: str, recorded_run: Any, run_dir: Path) -> Path:
    """Where a run's YAML is now: where it was, or, when the run was moved together with it (the YAML gone
    from its old place), at the same place relative to the run directory. The modules beside the YAML (a
    user builder) are imported from there."""
    path = Path(space_path)
    if path.is_file() or not isinstance(recorded_run, str):
        return path
    moved = Path(os.path.normpath(Path(run_dir).resolve() / os.path.relpath(path, recorded_run)))
    return moved if moved.is_file() else path


_UNREGISTERED = re.compile(r"Could not locate class '([^']+)'|names class '([^']+)' of module '[^']+', which is not "
                           r"registered")


def load_checkpoint(path: Path, space: Space | None = None) -> Any:
    """``keras.saving.load_model(path, compile=False)`` for a run's checkpoint.

    Raises:
        BadInput: the file names a class that no imported module registers with Keras now (the user's module
            renamed, moved or re-registered the class since the search), naming the file, the class and the
            run's ``model.builder``; other load errors propagate.
    """
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except (TypeError, ValueError) as e:
        found = _UNREGISTERED.search(str(e))
        if found is None:
            raise
        builder = f" (the run's model.builder: {space.model['builder']})" if space is not None else ""
        raise BadInput(f"{path}: its model holds class {found.group(1) or found.group(2)!r}, which no imported "
                       f"module registers with Keras now{builder}: give the class back its name and "
                       "@keras.saving.register_keras_serializable() as when the search ran") from None


def disk_bytes(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def prune_checkpoints(run_dir: Path, keep: set[str] | None = None) -> int:
    """Delete the model checkpoints (``models/TRIAL/step_*``) of every point not on the validation front (or
    not in ``keep``), and every Ray trial checkpoint but each trial's latest (for ``--resume``). Call it after
    the search: while it runs, PBT may clone any trial's latest checkpoint. A point that left the front never
    returns to it (the front only improves), so its model checkpoint is never needed again.

    Returns:
        the model checkpoints kept (`disk_bytes` measures the run afterwards).
    """
    import shutil

    from mutate.results.pareto import Point, front

    run_dir = Path(run_dir)
    rows = read_points(run_dir)
    if keep is None:
        lm = any("val_perplexity" in r for r in rows)
        keep = {p.checkpoint for p in front([Point.from_row(r) for r in rows], higher_is_better=not lm)}
    for trial in run_dir.glob("trial_*"):  # Ray's own: PBT can no longer clone; the latest serves --resume
        for old in sorted(trial.glob("checkpoint_*"))[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    kept = 0
    for folder in sorted((run_dir / "models").glob("*/step_*")):
        rel = str(folder.relative_to(run_dir))
        if rel in keep:
            kept += 1
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return kept
