"""``mutate export``: take one model of a run home, re-evaluated and spliced, as ``.keras``, LiteRT or a
TensorFlow SavedModel (`mutate.results.formats`)."""

from __future__ import annotations

import math
import shlex

from pathlib import Path

import keras

import mutate
from mutate.search import builders
from mutate.errors import BadInput, MetricMismatch, MissingInput, OutputExists
from mutate.results.pareto import Point
from mutate.results.report import Run
from mutate.results.runs import load_checkpoint, load_recorded_space
from mutate.results.final import evaluate, read_tests, write_tests
from mutate.results.formats import check_backend, check_destination, export_model, format_for
from mutate.search.trial import split_validation

TOLERANCE = 1e-6
"""Largest accepted difference between the stored and the re-evaluated validation metric."""


def choose(run: Run, *, point: int | None, max_size: int | None, min_accuracy: float | None) -> Point:
    """The front point (chosen on validation) picked by index, by size limit or by validation accuracy floor.

    Raises:
        BadInput: no such point.
    """
    given = [name for name, v in (("point", point), ("max_size", max_size), ("min_accuracy", min_accuracy))
             if v is not None]
    if len(given) != 1:
        raise BadInput(f"{run.dir}: choose the front point by exactly one of point, max_size or min_accuracy "
                       f"(got {', '.join(given) or 'none'})")
    fr = run.pareto_front()
    if not fr:
        raise BadInput(f"{run.dir}: the run has no points yet")
    if point is not None:
        if not 0 <= point < len(fr):
            raise BadInput(f"{run.dir}: --point {point}: the front has {len(fr)} points, numbered 0 to "
                             f"{len(fr) - 1} (see `mutate pareto {shlex.quote(str(run.dir))}`)")
        return fr[point]
    if max_size is not None:
        fits = [p for p in fr if p.size <= max_size]
        if not fits:
            raise BadInput(f"{run.dir}: --max-size {max_size}: the smallest front point has {fr[0].size:,} bytes")
        return fits[-1]
    if not math.isfinite(min_accuracy) or min_accuracy < 0:  # type: ignore[arg-type]
        raise BadInput(f"{run.dir}: --min-accuracy {min_accuracy}: expected a number >= 0 (an accuracy from the "
                       f"front's table{', here a perplexity' if run.lm else ''})")
    # a value copied from the table (4 decimals) selects the point it was printed for
    half = 5e-5
    ok = [p for p in fr if (p.metric >= min_accuracy - half if not run.lm  # type: ignore[operator]
                            else p.metric <= min_accuracy + half)]  # type: ignore[operator]
    if not ok:
        raise BadInput(f"{run.dir}: --min-accuracy {min_accuracy}: the best front point reaches {fr[-1].metric:.4f}")
    return ok[0]


def export(run_dir: Path, *, point: int | None = None, max_size: int | None = None,
           min_accuracy: float | None = None, out: Path, force: bool = False, fmt: str | None = None,
           arrays: str = "smallest", run: Run | None = None) -> keras.Model:
    """Load the chosen point's checkpoint, re-evaluate it, splice its finished layers and save it.

    ``run``: choose on this `Run` of ``run_dir`` (its points as read when it was opened: ``point=i`` is the
    i-th point of the front it shows) instead of the folder as it is now (a search may still be writing it).

    Raises:
        MissingInput: ``run_dir`` is not a run, or the chosen point's checkpoint is gone.
        OutputExists: ``out`` exists and ``force`` is False (also a ``FileExistsError``).
        BadInput: ``out`` does not end in .keras, or no such point.
        MetricMismatch: the re-evaluated metric differs from the stored one (nothing is written); not a
            ``BadInput``, since the command was fine.
    """
    opened = run is not None
    run = run if run is not None else Run(run_dir)
    out = Path(out)
    if out.exists() and not force:
        raise OutputExists(f"{out}: exists; pass --force (from Python: force=True) to overwrite it")
    fmt = format_for(out, fmt)
    check_backend(fmt, out)  # before the checkpoint loads and is evaluated
    check_destination(out, fmt)
    chosen = choose(run, point=point, max_size=max_size, min_accuracy=min_accuracy)
    space = load_recorded_space(run.dir)
    builders.import_user_modules(space)  # a subclassed model's class must be registered before it loads
    checkpoint = run.dir / chosen.checkpoint / "model.keras"
    if not checkpoint.is_file():
        changed = (" (gone since this Run was read, e.g. pruned off the front by the search: `mutate.load_run` the "
                   "run again)") if opened else ""
        raise MissingInput(f"{run.dir}: point {chosen.trial}/{chosen.step}: its checkpoint {checkpoint} is missing"
                           f"{changed}")
    import zipfile

    def readable() -> bool:  # cut short (a full disk, a copy): Keras said "File not found" or KeyError
        try:
            with zipfile.ZipFile(checkpoint) as z:
                return "config.json" in z.namelist()
        except (zipfile.BadZipFile, OSError):
            return False

    if not readable():
        raise BadInput(f"{checkpoint}: damaged, not a Keras model file (a .keras file is a zip archive holding "
                       f"config.json); point {chosen.trial}/{chosen.step} cannot be exported")
    model = load_checkpoint(checkpoint, space)
    data = builders.load_data(space.data, space.where)
    spliced = mutate.strip(model, finished_only=True)
    _, _, x_val, y_val = split_validation(data, seed=space.search["seed"])
    again = evaluate(spliced, x_val, y_val, run.lm)  # the validation split, as the search measured it
    name = "perplexity" if run.lm else "accuracy"
    if abs(again - chosen.metric) > TOLERANCE * max(1.0, abs(chosen.metric)):
        raise MetricMismatch(f"{run.dir}: point {chosen.trial}/{chosen.step}: re-evaluated validation {name} "
                             f"{again:.6f} differs from the stored {chosen.metric:.6f}; refusing to write {out}")
    test = evaluate(spliced, data.x_test, data.y_test, run.lm)
    written = export_model(spliced, out, fmt, x=x_val, y=None if run.lm else y_val, arrays=arrays)
    values = read_tests(run.dir)
    if chosen.checkpoint not in values:  # the test set, once per chosen model
        values[chosen.checkpoint] = test
        try:
            write_tests(run.dir, values)
        except OSError as e:  # a read-only run (a shared copy): the export is written; the record is a cache
            import sys

            print(f"mutate: note: could not record the test {name} in {run.dir} ({e.strerror or e})",
                  file=sys.stderr)
    spliced.summary()
    size = mutate.model_size(spliced)
    print(size)
    print(f"\nexported {chosen.trial}/{chosen.step} ({chosen.genome}): {size.bits // 8:,} bytes counted "
          f"({size.bits / size.dense_bits:.4f} of dense, {size.ratio:.1f}x fewer bits), validation {name} "
          f"{again:.4f} (stored {chosen.metric:.4f}), test {name} {test:.4f} -> {out}")
    line = f"  {fmt} file: {written.bytes:,} bytes"
    if written.gzip_bytes is not None:
        line += f" ({written.gzip_bytes:,} gzipped)"
    if written.arrays is not None:
        line += f", arrays {written.arrays}"
        if written.other_bytes is not None:
            other = "folded" if written.arrays == "packed" else "packed"
            line += f" (the smaller; {other}: {written.other_bytes:,} bytes)"
    if written.max_diff is not None:
        line += f"; interpreter on the {len(x_val):,} validation rows: max |LiteRT - Keras| {written.max_diff:.2e}"
        if written.litert_accuracy is not None:
            line += f", accuracy {written.litert_accuracy:.4f} (Keras {written.keras_accuracy:.4f})"
    print(line)
    return spliced
