"""Fill the sensitivity table's metrics (`mutate.search.table`; its sizes come from `mutate.search.driver.prepare`).

Run by ``mutate search`` in the driver, before any trial: the model of trial 0 (same seed, data order and
optimizer) is trained for ``mutations.warmup_steps``, then each (layer, operator, level) of the space is
factored alone from those weights (no training), its product written into the layer's kernel, and the model
evaluated on a fixed validation subset (the first ``subset`` examples of the search's validation split, in
batches); the kernel is then restored.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Mapping

import keras

import operators
from mutate.search.space import Space
from mutate.operator.kinds import view_of
from mutate.operator.surgery import compressible
from mutate.search.table import Table

SUBSET = 2000
"""Validation examples evaluated per table entry (at most; the split may be smaller)."""


class Stopped(Exception):
    """`measure` was asked to stop (its ``stop`` event was set): the search failed to start meanwhile."""


def _name_scopes() -> list[Any]:
    """Keras' stack of open name scopes (a list; empty when Keras keeps none). A layer call that fails while
    its TensorFlow name scope opens (a layer name TensorFlow refuses, ``fc[1]``) leaves its entry on the
    stack, and every layer made afterwards in the process gets that prefix in its path: `measure` cuts the
    stack back after such a failure (a user calling `mutate.run_search` again from a notebook)."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # a Keras that moved it: nothing to restore
        return []
    return global_state.get_global_attribute("name_scope_stack", default=[], set_to_default=True)


def _model_failed(space: Space, e: Exception) -> Exception:
    """``e``, raised while the dense model (no mutation yet) trained or evaluated, as a one-line error of
    ``model.builder`` when it came from the model itself: Keras says it failed "when calling" a layer, or a
    frame of the user's builder module raised it (a call using NumPy on a traced tensor, a layer name
    TensorFlow refuses as a scope). Anything else is returned as it is (an internal error)."""
    import sys
    import traceback

    builder = str(space.model["builder"])
    module = sys.modules.get(builder.partition(":")[0]) if ":" in builder else None
    own = getattr(module, "__file__", None)
    frames = traceback.extract_tb(e.__traceback__)
    if "Exception encountered when calling" not in str(e) and not (own and any(f.filename == own for f in frames)):
        return e
    lines = [ln.strip() for ln in str(e).replace("\x1b[1m", "").replace("\x1b[0m", "").splitlines() if ln.strip()]
    said = next((ln for ln in lines if not ln.startswith("Exception encountered when calling")), lines[0] if lines else "")
    return space.error("model.builder", f"{builder} built a model that Keras could not train or evaluate as it "
                                        f"was built, before any mutation ({type(e).__name__}: {said[:300]})")


class _Stop(keras.callbacks.Callback):
    """Ends the warm-up's ``fit`` at the next batch once ``stop`` is set."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.stop.is_set():
            self.model.stop_training = True


def measure(space: Space, allowed: Mapping[str, list[str]], sizes: Table | None = None, *, subset: int = SUBSET,
            out: Callable[[str], None] = print, stop: threading.Event | None = None,
            built: threading.Event | None = None) -> Table:
    """Train trial 0's model through the warm-up, then factor and evaluate every table entry.

    Args:
        space: the validated space.
        allowed: layer name -> operators allowed on it.
        sizes: the sizes-only table `mutate.search.driver.prepare` returned, filled in place (None: prepare it).
        subset: validation examples per evaluation.
        out: where the one-line summary goes.
        stop: set by another thread to end the measurement early (between batches of the warm-up and between
            entries): `Stopped` is raised then.
        built: set once the model is built (its initial weights drawn from the seeds), e.g. for another
            thread that waits to draw from Python's global `random`.

    Returns:
        The filled table (``seconds`` includes the warm-up training).

    Raises:
        Stopped: ``stop`` was set.
    """
    from mutate.search.trial import EVAL_BATCH, EVAL_BATCH_LM, TrialRunner, evaluate_arrays

    t0 = time.perf_counter()
    runner = TrialRunner(space, seed=space.search["seed"] * 1000)  # trial 0's seed: the same warm-up
    if built is not None:
        built.set()
    warm = space.mutations["warmup_steps"]
    def check() -> None:
        if stop is not None and stop.is_set():
            raise Stopped("the sensitivity table was stopped")

    model, lm = runner.model, runner.lm
    x, y = runner.x_val[:subset], runner.y_val[:subset]
    batch = EVAL_BATCH_LM if lm else EVAL_BATCH

    def evaluate() -> tuple[float, float]:
        res = evaluate_arrays(model, x, y, batch)
        loss = float(res["loss"]) if math.isfinite(res["loss"]) else 1e9
        return (-loss if lm else float(res["accuracy"])), loss

    depth = len(_name_scopes())
    try:  # the dense model's first steps: a failure here is the model's own (see _model_failed)
        if warm:
            runner.train(warm, callbacks=[_Stop(stop)] if stop is not None else ())
        base_metric, base_loss = evaluate()
    except Exception as e:  # noqa: BLE001 - re-raised as it is unless the model raised it
        del _name_scopes()[depth:]
        raise _model_failed(space, e) from None
    check()
    if sizes is None:
        from mutate.search.driver import prepare

        sizes = prepare(space).sizes
    table = sizes
    kernels = {k.path: k for k in compressible(model)}
    for e in table.entries:
        check()
        t1 = time.perf_counter()
        k = kernels[e.layer]
        var = k.slot.variable(k.layer)
        original = keras.ops.convert_to_numpy(var)
        view = view_of(k.layer, k.slot)
        op = operators.get(e.operator, **e.params)
        a = view.to_matrix(original)
        factors = {**op.factor(a), **op.generated_factors(*a.shape)}
        product = op.product({name: keras.ops.convert_to_tensor(v) for name, v in factors.items()})
        var.assign(keras.ops.convert_to_numpy(view.from_matrix(product)).astype(original.dtype))
        try:
            e.metric, e.loss = evaluate()
        finally:
            var.assign(original)
        if op.entropy_coded:  # a stack ending in huffman: its coded size depends on the weights; measure it here
            e.saved = (operators.dtype_bits(original.dtype) * a.size - op.size_bits(factors)) // 8
        e.seconds = time.perf_counter() - t1
    table.base_metric, table.base_loss, table.lm = base_metric, base_loss, lm
    table.subset, table.seconds = len(x), time.perf_counter() - t0
    evals = sum(e.seconds for e in table.entries)
    out(f"  sensitivity: {len(table.entries)} (layer, operator, level) entries on {len(x)} validation examples in "
        f"{table.seconds:.1f}s ({table.seconds - evals:.1f}s warm-up of {warm} steps, {evals:.1f}s factor+evaluate)")
    return table
