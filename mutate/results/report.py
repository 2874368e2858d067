"""``mutate pareto``: the front of a run as a table, CSV, JSON and PNG; several runs compared."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
from pathlib import Path
from typing import Any

from mutate.errors import BadInput
from mutate.results.final import read_tests
from mutate.results.pareto import Point, front, hypervolume
from mutate.results.runs import is_number, read_points, read_record


class Run:
    """A run directory's points, front and reference values (what `mutate.load_run` returns)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir).resolve()
        self.label = self.dir.name  # its name in comparisons (`distinct_labels` when two folders share one)
        rows = read_points(self.dir)
        for i, r in enumerate(rows):
            if "val_accuracy" not in r and "val_perplexity" not in r:
                raise BadInput(f"{self.dir / 'points.jsonl'}: row {i + 1} has no val_accuracy or val_perplexity; "
                               "fronts are chosen on validation metrics")
            missing = [k for k in ("trial", "step", "bytes", "ratio") if k not in r]
            if missing:
                raise BadInput(f"{self.dir / 'points.jsonl'}: row {i + 1} has no {', '.join(missing)}: damaged")
            _check_numbers(self.dir / "points.jsonl", i + 1, r)
        self.lm = any("val_perplexity" in r for r in rows)
        tests = read_tests(self.dir)
        name = f"test_{'perplexity' if self.lm else 'accuracy'}"
        self._rows = [{**r, name: tests[r["checkpoint"]]} if r.get("checkpoint") in tests else r for r in rows]
        info = read_record(self.dir / "space.json")
        if not isinstance(info.get("space"), dict):
            raise BadInput(f"{self.dir / 'space.json'}: damaged, no recorded space")
        self.space = info["space"]
        self.classes = info.get("classes")
        classes = self.classes
        if classes is not None and (not is_number(classes) or not isinstance(classes, int) or classes < 1):
            raise BadInput(f"{self.dir / 'space.json'}: damaged, classes: {classes!r} is not a count of classes")
        budget = self.space.get("budget", {})
        if not isinstance(budget, dict) or not _budget_ok(budget.get("bytes"), budget.get("ratio")):
            raise BadInput(f"{self.dir / 'space.json'}: damaged, budget: {budget!r} is not a budget (bytes >= 1 "
                           "or a ratio in (0, 1])")

    @property
    def test_source(self) -> str:
        """Where the test column comes from: ``"final"`` (evaluated once per front point after the search),
        ``"per report"`` (a run of an earlier version, which evaluated the test set at every report and chose
        its front on it; the front shown now is chosen on validation), or ``"none"`` (not evaluated yet)."""
        if any("accuracy" in r or "perplexity" in r for r in self._rows):
            return "per report"
        return "final" if any(p.test is not None for p in self.points()) else "none"

    def points(self) -> list[Point]:
        """Every reported point, in order."""
        return [Point.from_row(r) for r in self._rows]

    def pareto_front(self) -> list[Point]:
        """The non-dominated points, smallest first."""
        return front(self.points(), higher_is_better=not self.lm)

    @property
    def dense_bytes(self) -> int | None:
        rows = [r for r in self._rows if r.get("ratio")]
        return int(round(rows[0]["bytes"] / rows[0]["ratio"])) if rows else None

    @property
    def reference_metric(self) -> float:
        """Chance level: 1 / classes for accuracy (from the model's output width), the vocabulary size for
        perplexity (a uniform guess)."""
        classes = self.classes
        if classes is None:  # a run recorded without it: the built-in datasets have 10 classes
            classes = 10
        return float(classes) if self.lm else 1.0 / classes

    def hypervolume(self) -> float:
        """Area dominated by the front up to (ratio 1.0, chance level); see `mutate.results.pareto.hypervolume`."""
        return hypervolume(self.points(), self.reference_metric, 1.0, higher_is_better=not self.lm)

    def test_hypervolume(self) -> float | None:
        """The hypervolume of the validation-chosen front measured with its test values (None unless every
        front point has one): what a user would get from the points the search picked."""
        fr = self.pareto_front()
        if not fr or any(p.test is None for p in fr):
            return None
        tested = [dataclasses.replace(p, metric=p.test) for p in fr]
        return hypervolume(tested, self.reference_metric, 1.0, higher_is_better=not self.lm)

    def budget_bytes(self) -> int | None:
        b = self.space.get("budget", {})
        if b.get("bytes") is not None:
            return int(b["bytes"])
        return int(b["ratio"] * self.dense_bytes) if b.get("ratio") is not None and self.dense_bytes else None

    def best_under_budget(self) -> Point | None:
        """The validation-chosen winner at the run's budget: the front point with the best validation metric
        among those within the budget (None when the budget is unknown or nothing fits). Its ``test`` is
        what the search delivers at the budget."""
        budget = self.budget_bytes()
        fits = [p for p in self.pareto_front() if budget is not None and p.size <= budget]
        return fits[-1] if fits else None

    def export(self, out: str | Path, *, point: int | None = None, max_size: int | None = None,
               min_accuracy: float | None = None, force: bool = False) -> Any:
        """`mutate export` from Python; returns the spliced Keras model. Chooses among the points this `Run`
        read when it was opened (``point=i``: the i-th point of its `pareto_front`), even while a search
        still writes the run."""
        from mutate.results.export import export

        return export(self.dir, point=point, max_size=max_size, min_accuracy=min_accuracy, out=Path(out),
                      force=force, run=self)


def _budget_ok(nbytes: Any, ratio: Any) -> bool:
    """A recorded budget as the space allows it: bytes an integer >= 1, a ratio in (0, 1], or absent."""
    return ((nbytes is None or (is_number(nbytes) and math.isfinite(nbytes) and nbytes >= 1))
            and (ratio is None or (is_number(ratio) and 0 < ratio <= 1)))


def _check_numbers(path: Path, line: int, row: dict[str, Any]) -> None:
    """A row's sizes, step and metrics are numbers, finite (a perplexity may overflow to +inf), the sizes and
    the step not negative: a hand edit or a damaged copy made them text, null, NaN or Infinity, and one NaN
    metric would take over the front (every comparison with it is false).

    Raises:
        BadInput: naming the file, the row, the key and the value.
    """
    for key in ("step", "bytes", "ratio", "val_accuracy", "val_perplexity", "val_loss", "test_accuracy",
                "test_perplexity", "accuracy", "perplexity"):
        if key not in row or (row[key] is None and key not in ("step", "bytes", "ratio", "val_accuracy",
                                                                 "val_perplexity")):
            continue
        value = row[key]
        if not is_number(value):
            raise BadInput(f"{path}: row {line}: {key}: {value!r} is not a number: damaged")
        if math.isnan(value) or (math.isinf(value) and not (key.endswith("perplexity") and value > 0)) or (
                key in ("step", "bytes", "ratio") and value < 0):
            raise BadInput(f"{path}: row {line}: {key}: {value!r} is out of range: damaged")


def load_run(run_dir: str | Path) -> Run:
    """Open a run directory (finished or still running)."""
    return Run(run_dir)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(run: Run) -> str:
    """The front as text: validation metric (what chose it) and test metric side by side."""
    metric = "perplexity" if run.lm else "accuracy"
    lines = [f"{'#':>3}  {'bytes':>10}  {'ratio':>7}  {'val ' + metric[:3]:>9}  {'test ' + metric[:3]:>9}  "
             f"{'trial/step':<22}  genome"]
    for i, p in enumerate(run.pareto_front()):
        lines.append(f"{i:>3}  {p.size:>10,}  {p.ratio:>7.4f}  {p.metric:>9.4f}  {_fmt(p.test):>9}  "
                     f"{p.trial + '/' + str(p.step):<22}  {p.genome}")
    return "\n".join(lines)


def distinct_labels(dirs: list[Path]) -> list[str]:
    """Each run's folder name, with as many parent folders (joined by ``/``) as tell the compared runs apart:
    ``a/digits_mlp`` and ``b/digits_mlp`` instead of two ``digits_mlp`` rows."""
    parts = [Path(d).resolve().parts for d in dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return labels  # the same folder given twice


def compare_name(names: list[str]) -> str:
    """``compare_A_vs_B.png``; past 120 bytes (a file name holds 255), the first name, the count and a digest of
    them all: ``compare_A_and_8_more_3f2a9c1e.png``."""
    import hashlib

    joined = "_vs_".join(names)
    if len(joined.encode()) <= 120:
        return f"compare_{joined}.png"
    digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:8]
    first = names[0].encode()[:80].decode(errors="ignore")
    return f"compare_{first}_and_{len(names) - 1}_more_{digest}.png"


def compare_table(runs: list[Run]) -> str:
    """Several runs side by side: the front's hypervolume on validation (what chose it) and on test, and the
    validation-chosen winner at each run's own budget with its size and test metric."""
    short = "ppl" if any(r.lm for r in runs) else "acc"
    # every column after the name starts with a space: perplexity hypervolumes run to thousands
    lines = [f"{'run':<30}{'points':>7}{'front':>6} {'HV val':>10} {'HV test':>10}  {'best under budget:':<19}"
             f"{'bytes':>10} {'val ' + short:>9} {'test ' + short:>9}"]
    for run in runs:
        best = run.best_under_budget()
        if best is None:
            tail = f"{'-' if run.budget_bytes() is None else 'none fits':>28}"
        else:
            tail = f"{best.size:>28,} {best.metric:>9.4f} {_fmt(best.test):>9}"
        lines.append(f"{run.label:<30} {len(run.points()):>6} {len(run.pareto_front()):>5} "
                     f"{run.hypervolume():>10.4f} {_fmt(run.test_hypervolume()):>10}  {tail}")
    return "\n".join(lines)


def _write_set(files: dict[Path, str | bytes]) -> None:
    """Write files that belong together (a front's csv, json, png and html) all or none: every one goes to a
    temporary file first, and they replace their targets only once all are written; a target that is a
    folder refuses the set before anything moves (`IsADirectoryError`)."""
    tmps = {path: path.with_name(path.name + ".tmp") for path in files}
    try:
        for path, data in files.items():
            if path.is_dir():
                raise IsADirectoryError(21, "Is a directory", str(path))
            if isinstance(data, bytes):
                tmps[path].write_bytes(data)
            else:
                tmps[path].write_text(data)
        with _interrupt_deferred():  # a Ctrl-C here would leave some targets new and some old
            for path, tmp in tmps.items():
                tmp.replace(path)
    except BaseException:
        for tmp in tmps.values():  # nothing half-written (a full disk, a read-only folder, a Ctrl-C)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _interrupt_deferred():
    """Hold a SIGINT (Ctrl-C) that arrives inside the block until it ends (in the main thread; elsewhere
    signals do not arrive)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield  # a handler installed outside Python cannot be put back: not deferred
        return
    caught: list[int] = []
    before = signal.signal(signal.SIGINT, lambda sig, frame: caught.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if caught:
            signal.raise_signal(signal.SIGINT)  # now, to the handler that was there


def _written(folder: Path, write: Any) -> bool:
    """Run ``write`` (files in ``folder``); when the folder refuses them (read-only, full), say so in one line
    on stderr and go on: the table printed above is the answer, the files a copy of it."""
    import sys

    try:
        write()
        return True
    except OSError as e:
        print(f"mutate: note: could not write the front's files in {folder} ({e.strerror or e}); the table above "
              "is complete", file=sys.stderr)
        return False


def _rows(run: Run) -> list[dict[str, Any]]:
    metric = "perplexity" if run.lm else "accuracy"
    return [{"point": i, "bytes": p.size, "ratio": p.ratio, f"val_{metric}": p.metric, f"test_{metric}": p.test,
             "trial": p.trial, "step": p.step, "genome": p.genome, "checkpoint": p.checkpoint}
            for i, p in enumerate(run.pareto_front())]


def write_outputs(run: Run) -> None:
    """pareto.csv, pareto.json, pareto.png and pareto.html (interactive, offline) in the run directory."""
    rows = _rows(run)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = {"front": rows, "selected_on": "validation", "test_source": run.test_source,
               "hypervolume": run.hypervolume(), "test_hypervolume": run.test_hypervolume(),
               "hypervolume_reference": {"ratio": 1.0, "metric": run.reference_metric},
               "dense_bytes": run.dense_bytes, "budget_bytes": run.budget_bytes(), "points": len(run.points()),
               "best_under_budget": _winner(run)}
    from mutate.results.plots import pareto_html, pareto_png

    _write_set({run.dir / "pareto.csv": buf.getvalue(), run.dir / "pareto.json": json.dumps(summary, indent=1),
                run.dir / "pareto.png": pareto_png([run]), run.dir / "pareto.html": pareto_html([run])})


def _winner(run: Run) -> int | None:
    """The front index of `Run.best_under_budget` (None: no budget, or nothing fits)."""
    best = run.best_under_budget()
    return None if best is None else run.pareto_front().index(best)


def at_budget(run: Run) -> str:
    """One line: the validation-chosen winner at the run's budget, or that no front point fits it."""
    budget, fr = run.budget_bytes(), run.pareto_front()
    if budget is None:
        return "  budget: not recorded"
    i = _winner(run)
    if i is None:
        return (f"  at the budget ({budget:,} B): no front point fits (the smallest has {fr[0].size:,} B)"
                if fr else f"  at the budget ({budget:,} B): no points yet")
    p, name = fr[i], "perplexity" if run.lm else "accuracy"
    test = f", test {p.test:.4f}" if p.test is not None else ""
    return f"  at the budget ({budget:,} B): point {i}, {p.size:,} B, validation {name} {p.metric:.4f}{test}"


def pareto(runs: list[Path], sensitivity: bool = False, sizes: bool = False) -> None:
    """Print each run's front and hypervolume and write its files; with several runs, compare them. With
    ``sensitivity``, also print each run's sensitivity table (`mutate.search.table`); with ``sizes``, the
    .keras, .tflite and gzip(.tflite) bytes of each front point (`mutate.results.formats.file_sizes`)."""
    opened = [Run(r) for r in runs]
    for run, label in zip(opened, distinct_labels([r.dir for r in opened])):
        run.label = label
    kinds = {run.lm: run for run in opened if run.points()}
    if len(kinds) == 2:  # one plot and one table per comparison: perplexity and accuracy on one axis is noise
        raise BadInput(f"{kinds[True].dir} measures perplexity and {kinds[False].dir} accuracy; a comparison "
                       "plots one metric: give `mutate pareto` runs of one kind (or each run on its own)")
    for run in opened:
        if not run.points():
            print(f"{run.dir}: no points yet")
            continue
        metric = "perplexity" if run.lm else "accuracy"
        thv = run.test_hypervolume()
        print(f"{run.dir.name}: {len(run.points())} points, {len(run.pareto_front())} on the front chosen on "
              f"validation {metric}; hypervolume {run.hypervolume():.4f} on validation"
              + (f", {thv:.4f} on test" if thv is not None else "")
              + f" (reference: ratio 1.0, {metric} {run.reference_metric:.4g})")
        if run.test_source == "per report":
            print(f"  (recorded by an earlier version, which chose its front on test {metric} evaluated at every "
                  "report; the test column shows those values)")
        elif run.test_source == "none":
            print("  (test column empty: the front was not evaluated on the test set yet)")
        elif any(p.test is None for p in run.pareto_front()):  # an interrupted search; `export` evaluated some
            fr = run.pareto_front()
            print(f"  (test column: {sum(p.test is not None for p in fr)} of {len(fr)} front points evaluated; a "
                  "finished search evaluates them all, `mutate export` the one it exports)")
        print(table(run))
        print(at_budget(run))
        wrote = _written(run.dir, lambda: write_outputs(run))
        if sizes:
            from mutate.results.formats import file_sizes

            fr = run.pareto_front()
            got = file_sizes(run.dir, [p.checkpoint for p in fr])
            print(f"  {'#':>3}{'counted':>12}{'.keras':>12}{'.tflite':>12}{'gzip(.tflite)':>15}   files of the front "
                  "(converted once, cached in file_sizes.json)")
            for i, p in enumerate(fr):
                s = got.get(p.checkpoint)
                if s and s.get("tflite") is None:
                    print(f"  {i:>3}{s['counted']:>12,}{s['keras']:>12,}{'-':>12}{'-':>15}   ({s.get('tflite_refused')})")
                    continue
                print(f"  {i:>3}" + (f"{s['counted']:>12,}{s['keras']:>12,}{s['tflite']:>12,}{s['tflite_gzip']:>15,}"
                                     if s else f"{p.size:>12,}   (no checkpoint left)"))
        if sensitivity:
            from mutate.search import table as tables

            t = tables.load(run.dir)
            if t is None:
                print("  (no sensitivity table in this run)")
            else:
                if t.base_metric is None:
                    base = "not measured"
                elif t.lm and t.base_loss is not None:
                    base = f"loss {t.base_loss:.4f} (perplexity {math.exp(min(t.base_loss, 700)):.4g})"
                else:
                    base = f"accuracy {t.base_metric:.4f}"
                print(f"\nsensitivity table ({len(t.entries)} entries, warm-up model's validation {base} on "
                      f"{t.subset} examples, built in {t.seconds:.1f}s; cost: the predicted "
                      f"{'loss increase' if t.lm else 'accuracy lost'}):")
                print("\n".join(t.lines()))
        if wrote:
            print(f"wrote pareto.csv, pareto.json, pareto.png, pareto.html in {run.dir}\n")
    if len(opened) > 1:
        from mutate.results.plots import pareto_html, pareto_png

        out = opened[0].dir.parent / compare_name([r.label.replace("/", "_") for r in opened])
        print(compare_table(opened))
        if _written(out.parent, lambda: _write_set({out: pareto_png(opened),
                                                    out.with_suffix(".html"): pareto_html(opened)})):
            print(f"wrote {out} and {out.with_suffix('.html').name}")
