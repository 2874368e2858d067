"""The test set, touched once per chosen model: after a search, each point of its validation front is
evaluated on the test set and the result stored in ``RUN_DIR/test_metrics.json`` (checkpoint -> value).

Selection never reads these values (`mutate.results.pareto.Point.metric` is the validation metric); they are what a
report shows next to validation. Keras is imported only when a model is evaluated.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from mutate import files

TESTS = "test_metrics.json"


def read_tests(run_dir: Path) -> dict[str, float]:
    """checkpoint -> test metric (accuracy or perplexity) for the points evaluated so far."""
    from mutate.errors import BadInput
    from mutate.results.runs import is_number, read_record

    path = Path(run_dir) / TESTS
    values = read_record(path) or {}
    for key, value in values.items():
        if not is_number(value) or math.isnan(value) or (math.isinf(value) and value < 0):  # perplexity may be +inf
            raise BadInput(f"{path}: damaged, {key}: {value!r} is not a number; delete the file (`mutate search "
                           "--resume` or `mutate export` evaluates the front again)")
    return values


def write_tests(run_dir: Path, values: dict[str, float]) -> None:
    """Store the test metrics (atomically)."""
    files.write_text(Path(run_dir) / TESTS, json.dumps(values, indent=1, sort_keys=True))


def evaluate(model: Any, x: Any, y: Any, lm: bool) -> float:
    """Accuracy, or perplexity for a language model, of ``model`` on (x, y) (a test or validation split)."""
    import keras

    from mutate.search.trial import EVAL_BATCH, EVAL_BATCH_LM, evaluate_arrays

    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[] if lm else ["accuracy"])
    res = evaluate_arrays(model, x, y, EVAL_BATCH_LM if lm else EVAL_BATCH)
    return math.exp(min(res["loss"], 50.0)) if lm else float(res["accuracy"])


def evaluate_front(run_dir: Path, out: Callable[[str], None] = print) -> dict[str, float]:
    """Evaluate every validation-front point not yet evaluated on the test set, once; returns all values.

    A point whose checkpoint is missing (removed by hand) is skipped with a line saying so.
    """
    import time

    from mutate.search import builders
    from mutate.results.report import Run
    from mutate.results.runs import load_checkpoint, load_recorded_space

    run = Run(run_dir)
    values = read_tests(run.dir)
    todo = [p for p in run.pareto_front() if p.checkpoint and p.checkpoint not in values]
    if not todo:
        return values
    t0 = time.perf_counter()
    space = load_recorded_space(run.dir)
    builders.import_user_modules(space)
    data = builders.load_data(space.data, space.where)
    done = 0
    for p in todo:
        path = run.dir / p.checkpoint / "model.keras"
        if not path.is_file():
            out(f"  test set: point {p.trial}/{p.step} has no checkpoint at {path}; not evaluated")
            continue
        model = load_checkpoint(path, space)
        values[p.checkpoint] = evaluate(model, data.x_test, data.y_test, run.lm)
        write_tests(run.dir, values)
        done += 1
    out(f"  test set: evaluated the {done} validation-front point(s) once each in "
        f"{time.perf_counter() - t0:.1f}s")
    return values
