"""One trial of a search, without Ray: build, mutate mid-training, train, measure, checkpoint, restore.

The search runner drives a `TrialRunner` from a Ray Tune trainable; tests drive it directly. A checkpoint
is the whole model as ``.keras`` (architecture and weights, blended state included) plus ``state.json``
(step and genome), so any trial can restore any other trial's architecture.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

import mutate
from mutate import files
from mutate.search import builders
from mutate.data import Dataset
from mutate.operator.surgery import (compressible, densify, optimizer_state, relative_path, set_optimizer_state,
                                     slot_keys, splice_finished, walk)
from mutate.search.devices import make_strategy, scope, strategy_for
from mutate.errors import NonFiniteLoss
from mutate.search.genome import UNDO, Genome, Mutation, current, from_json, pending, summary, to_json
from mutate.search.space import Space

_OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop,
               "adamw": keras.optimizers.AdamW}


EVAL_BATCH, EVAL_BATCH_LM = 512, 32
"""Evaluation batch sizes (a language model's logits are batch x seq_len x vocab floats)."""


def evaluate_arrays(model: keras.Model, x: Any, y: Any, batch: int) -> dict[str, float]:
    """``model.evaluate(x, y, batch_size=batch, return_dict=True)`` on in-memory arrays, computed batch by batch
    with ``test_on_batch`` and averaged over rows as Keras' evaluate averages them. Each ``evaluate`` call sets
    up a data adapter, an epoch iterator and callbacks: about 0.1 s on this project's 2-core CPU, against
    2 ms for the 135 validation images of the digits search, which evaluates at every report, for every
    sensitivity-table entry and for every front point (`experiments/bench_evaluate.py`). On TensorFlow only:
    JAX's and PyTorch's ``test_on_batch`` rebuild their state per call, and their ``evaluate`` is the faster
    (a bug hunt measured 65 against 46 ms on JAX, 594 against 395 ms on PyTorch, for 6,000 rows)."""
    if keras.backend.backend() != "tensorflow":
        return {k: float(v) for k, v in model.evaluate(x, y, batch_size=batch, verbose=0, return_dict=True).items()}
    n = len(x)
    if n == 0:
        raise ValueError("nothing to evaluate: the split has no rows")
    totals: dict[str, float] = {}
    for start in range(0, n, batch):
        logs = model.test_on_batch(x[start:start + batch], y[start:start + batch], return_dict=True)
        rows = min(batch, n - start)
        for k, v in logs.items():
            totals[k] = totals.get(k, 0.0) + float(v) * rows
    return {k: v / n for k, v in totals.items()}


def split_validation(data: Dataset, seed: int, fraction: float = 0.1) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_val, y_val): a fixed ``fraction`` of the training set held out for the score."""
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    cut = max(1, int(round(fraction * len(order))))
    val, train = order[:cut], order[cut:]
    return data.x_train[train], data.y_train[train], data.x_train[val], data.y_train[val]


OPTIMIZER_FILE = "optimizer.npz"
"""A search checkpoint's optimizer state (`TrialRunner.save` with ``optimizer=True``)."""


def budget_bytes(space: Space, dense_bytes: int) -> int:
    """The size budget in bytes (``budget.bytes``, or ``budget.ratio`` of the dense model)."""
    b = space.budget
    return int(b["bytes"]) if b["bytes"] is not None else int(math.floor(b["ratio"] * dense_bytes))


def _float_weights(model: keras.Model, layers: list[str] | None) -> list[tuple[str, Any]]:
    """(owner layer path, variable) for every floating-point weight (of the layers at the named kernel paths
    when given), the model's layers in order."""
    out, seen = [], set()
    if layers is None:
        chosen = [la for la, _ in walk(model) if la is not model]
    else:
        # a restored model's nested layers answer to their structural address too (surgery's module doc)
        by_path = {name: k.layer for k in compressible(model) for name in (k.structural, k.path)}
        chosen = [by_path[n] for n in layers]
    for layer in chosen:
        for w in list(layer._trainable_variables) + list(layer._non_trainable_variables) + \
                 (list(layer.cell.weights) if layers is not None and hasattr(layer, "cell") else []):
            if id(w) in seen or not str(w.dtype).startswith(("float", "bfloat")):
                continue
            seen.add(id(w))
            out.append((relative_path(model, layer), w))
    return out


def nonfinite_weights(model: keras.Model, layers: list[str] | None = None) -> str:
    """'' when every floating-point weight of ``model`` (or of the named layers) is finite; otherwise where the
    first non-finite value is, e.g. ``"layer 'dense_2' kernel holds 1 NaN/Inf value (nan at [0, 0])"``.

    Trainable weights, blend state and every other variable are checked with one reduction each, on the
    device, and a single transfer of the per-variable flags; only a bad variable is copied to the host (to
    count and locate its values). This does not depend on the loss: a kernel whose NaN a fused
    matmul+ReLU maps to 0 (oneDNN on AVX-512 CPUs) trains with a finite loss, but is caught here.
    """
    weights = _float_weights(model, layers)
    if not weights:
        return ""
    ok = keras.ops.convert_to_numpy(keras.ops.stack(
        [keras.ops.all(keras.ops.isfinite(w.value)) for _, w in weights]))
    for (owner, w), fine in zip(weights, ok):
        if fine:
            continue
        a = np.asarray(keras.ops.convert_to_numpy(w))
        bad = ~np.isfinite(a)
        count = int(bad.sum())
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        return (f"layer {owner!r} {w.name} holds {count:,} NaN/Inf value{'s' * (count > 1)} "
                f"({a[where]} at {list(where)})")
    return ""


MAX_LOSS = 50.0
"""Validation losses are capped here for scores (a language model's perplexity is exp(loss): at most e**50)."""


def member_score(metric: float, nbytes: int, target: int, loss: float, lm: bool) -> float:
    """PBT's score of a report. When the model fits its member's ``target``: ``metric``, the validation
    accuracy; for a language model minus the validation loss (the log of the perplexity: the same order, and
    small enough that the floor below keeps sizes apart; minus the perplexity itself reached -e**50, and the
    floor of -1e9 under it put a fitting model at perplexity 1e10 below every model over its target). Over the
    target: below every score that fits, smaller first, and among equal sizes (every dense trial) the lower
    validation loss."""
    loss = min(loss, MAX_LOSS)
    if nbytes <= target and math.isfinite(metric):
        return -loss if lm else metric
    floor = -(MAX_LOSS + 1.0) if lm else -1.0
    return floor - nbytes / max(target, 1) - 1e-6 * loss


class TrialRunner:
    """Trains one model of a space and applies its genome's mutations when their step comes.

    Args:
        space: the validated search space.
        seed: the trial's seed (weights, data order).
        data: the dataset (loaded from the space when None).
        shared: `shared()` of another runner of the same space in this process: its data, splits,
            distribution strategy and dense size are reused (nothing loaded, split or initialised again).
        build: False when a `restore` follows at once (no model is built or compiled first).
    """

    def __init__(self, space: Space, seed: int, data: Dataset | None = None, *,
                 shared: dict[str, Any] | None = None, build: bool = True) -> None:
        self.space, self.seed = space, int(seed)
        keras.utils.set_random_seed(self.seed)
        if shared is not None:
            self.data, self.strategy, self.dense_bytes = shared["data"], shared["strategy"], shared["dense_bytes"]
            self.x, self.y, self.x_val, self.y_val = shared["splits"]
        else:
            self.data = data if data is not None else builders.load_data(space.data, space.where)
            self.x, self.y, self.x_val, self.y_val = split_validation(self.data, seed=space.search["seed"])
            res = space.resources
            self.strategy = make_strategy(strategy_for(res["gpus"], res["tpu"]))
        self.lm = self.data.y_train.ndim > 1
        self.model: keras.Model = None  # type: ignore[assignment]
        if build or shared is None:
            with self.scope():
                self.model = builders.build_model(space.model, self.data, space.where)
        self.step = 0
        self.genome: Genome = ()
        self.train_seconds = 0.0
        self.litert_seconds = 0.0
        self._litert: dict[str, int] = {}
        self.unit = space.budget.get("unit", "stored")
        if shared is None:
            self.dense_bytes = (self.litert_bytes() if self.unit == "litert"
                                else mutate.model_size(self.model).dense_bits // 8)
        self.budget = budget_bytes(space, self.dense_bytes)
        self._rng = np.random.default_rng(self.seed)
        self.token: str | None = None  # the checkpoint this runner's state equals (see `save`), until it trains
        self.learning_rate = float(space.training["learning_rate"])
        self.fraction = 1.0  # the member's niche: its score counts against fraction * budget
        if self.model is not None:
            with self.scope():
                self._compile()

    def shared(self) -> dict[str, Any]:
        """What another runner of this space in this process can reuse (see ``shared``)."""
        return {"data": self.data, "strategy": self.strategy, "dense_bytes": self.dense_bytes,
                "splits": (self.x, self.y, self.x_val, self.y_val)}

    # -- model state ----------------------------------------------------------------------------------------
    def scope(self) -> Any:
        """The distribution strategy's scope (a no-op on one device); model surgery happens inside it."""
        return scope(self.strategy)

    def _compile(self) -> None:
        t = self.space.training
        metrics = [] if self.lm else ["accuracy"]
        self.model.compile(_OPTIMIZERS[t["optimizer"]](self.learning_rate),
                           keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=metrics,
                           steps_per_execution=int(t.get("steps_per_execution", 1)))

    def set_learning_rate(self, rate: float) -> None:
        """Train on with learning rate ``rate`` (PBT's explore perturbs it); the optimizer's rate is a
        variable, so nothing is retraced."""
        rate = float(rate)
        if rate != self.learning_rate:
            self.learning_rate = rate
            if self.model is not None and getattr(self.model, "optimizer", None) is not None:
                self.model.optimizer.learning_rate = rate

    def apply(self, wanted: Genome) -> list[Mutation]:
        """Splice in every mutation of ``wanted`` beyond the applied genome whose planned step has come
        (None: now). Each starts its own blend window at the current step. Returns those applied."""
        done = []
        for m in pending(self.genome, wanted):
            if m.step is not None and m.step > self.step:
                break
            self.token = None
            self._mutate(m)
            done.append(m)
        return done

    def _mutate(self, m: Mutation) -> None:
        mut = self.space.mutations
        with self.scope():
            model = densify(self.model, m.layer) if m.layer in current(self.genome) else self.model
            if m.operator == UNDO:  # back to a dense kernel holding the product the layer computed
                self.model, self.genome = model, (*self.genome, m.applied(self.step))
                self._compile()
                return
            sched = mutate.Schedule(begin_step=0, end_step=mut["window"] - 1, frequency=mut["frequency"])
            self.model = mutate.compress(model, {m.layer: (m.operator, m.params)}, sched, refresh=mut["refresh"])
            self.genome = (*self.genome, m.applied(self.step))
            self._compile()

    def train(self, steps: int, callbacks: Sequence[Any] = ()) -> None:
        """Train ``steps`` batches (sampling without replacement, epoch by epoch), then splice every layer
        whose blend finished. ``callbacks``: more Keras callbacks for this ``fit``.

        Raises:
            NonFiniteLoss: the loss became NaN or Inf, or a weight did (an operator then refuses to factor it).
        """
        self.token = None
        batch = self.space.training["batch_size"]
        need = steps * batch
        idx = np.concatenate([self._rng.permutation(len(self.x)) for _ in range(-(-need // len(self.x)))])[:need]
        t0 = time.perf_counter()
        try:
            hist = self.model.fit(self.x[idx], self.y[idx], batch_size=batch, epochs=1, shuffle=False, verbose=0,
                                  callbacks=[mutate.CompressionCallback(), *callbacks])
        except ValueError as e:  # an operator refused to factor a NaN/Inf matrix at an update step
            self._check_weights(self.step + steps, e)
            raise
        self.train_seconds += time.perf_counter() - t0
        self.step += steps
        # The weights first: a NaN kernel behind a fused matmul+ReLU can train with a finite loss on some CPUs
        # (oneDNN on AVX-512 maps NaN to 0), so the loss alone would miss it; whenever the loss is NaN the
        # weights usually are too, and naming the weight says where it started.
        self._check_weights(self.step)
        loss = hist.history["loss"][-1]
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"training loss became {loss} at step {self.step} (genome {summary(self.genome)})")
        with self.scope():
            if splice_finished(self.model):
                self._compile()

    def _check_weights(self, step: int, cause: BaseException | None = None) -> None:
        """Raise `NonFiniteLoss` naming the first non-finite weight (see `nonfinite_weights`), if any."""
        bad = nonfinite_weights(self.model)
        if bad:
            raise NonFiniteLoss(f"weights became NaN/Inf by step {step}: {bad} (genome {summary(self.genome)})") \
                from cause

    def measure(self) -> dict[str, Any]:
        """Accuracy (or perplexity) on the validation split, size, and the score. The test set is not
        touched: it is evaluated once per chosen model, after the search (`mutate.results.final`).

        The score is the validation accuracy (negative perplexity for a language model) when the model fits
        the member's target (``fraction`` of the budget; ``search.budget_fractions``); over it, below every
        score that fits. ``fits_budget`` is always against the whole budget.

        Raises:
            NonFiniteLoss: the validation loss is NaN or Inf.
        """
        batch = EVAL_BATCH_LM if self.lm else EVAL_BATCH
        val = evaluate_arrays(self.model, self.x_val, self.y_val, batch)
        if not math.isfinite(val["loss"]):  # never report a point measured on a diverged model
            raise NonFiniteLoss(f"validation loss became {val['loss']} at step {self.step} "
                                f"(genome {summary(self.genome)})")
        nbytes = self.litert_bytes() if self.unit == "litert" else mutate.model_size(self.model).bits // 8
        metric = -math.exp(min(val["loss"], MAX_LOSS)) if self.lm else val["accuracy"]
        fits = nbytes <= self.budget
        target = int(math.floor(self.budget * self.fraction))
        score = member_score(metric, nbytes, target, val["loss"], self.lm)
        out = {"step": self.step, "bytes": nbytes, "ratio": nbytes / self.dense_bytes, "fits_budget": fits,
               "target": target,
               "score": score, "genome": to_json(self.genome), "genome_summary": summary(self.genome),
               "train_seconds": self.train_seconds, "backend": keras.backend.backend(),
               "learning_rate": self.learning_rate, "val_loss": float(val["loss"])}
        out.update(val_perplexity=-metric) if self.lm else out.update(val_accuracy=metric)
        if self.unit == "litert":
            out.update(unit="litert", litert_seconds=round(self.litert_seconds, 3))
        return out

    def litert_bytes(self) -> int:
        """Bytes of the model's LiteRT file (`mutate.export_model`) once every blending kernel is spliced
        (``budget.unit: litert``): a copy is loaded, spliced with its current factors and exported. The
        size depends on the genome, not on the weights, so it is cached per genome in this actor;
        ``litert_seconds`` sums what the exports cost. One exception, removed here: the converter stores
        identical constant arrays once, so a fresh model's equal arrays (zero biases, BatchNorm's ones) would
        make its file smaller than the same model's after training; the copy's constant float arrays are
        made distinct first (their values do not change a size)."""
        import tempfile

        key = summary(self.genome)
        if key not in self._litert:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="mutate-litert-") as d:
                self.model.save(Path(d) / "m.keras")
                copy = keras.saving.load_model(Path(d) / "m.keras", compile=False)
                mutate.strip(copy, force=True)
                rng = np.random.default_rng(0)
                for v in copy.weights:
                    if str(v.dtype).startswith(("float", "bfloat")):
                        a = keras.ops.convert_to_numpy(v)
                        if a.size and float(a.max()) == float(a.min()):  # trained weights are not constant
                            v.assign((a + rng.uniform(0.5, 1.0, a.shape) * 1e-3).astype(a.dtype))
                self._litert[key] = mutate.export_model(copy, Path(d) / "m.tflite", "litert").bytes
            self.litert_seconds += time.perf_counter() - t0
        return self._litert[key]

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike[str], token: str | None = None, optimizer: bool = False) -> Path:
        """Write ``model.keras`` and ``state.json`` into ``folder`` (each atomically), and with ``optimizer``
        the optimizer's state (``optimizer.npz``: moments and iteration count, so a paused or cloned trial
        trains on as if it had not stopped); returns the model path. ``token`` (stored in ``state.json`` and
        kept as ``self.token``) names this exact state: a search actor that still holds this runner when the
        checkpoint is restored reuses it."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "model.keras"
        files.atomic(folder / "model.tmp.keras", path, self.model.save)
        if optimizer and getattr(self.model.optimizer, "built", False):
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:  # in the optimizer's order (its variable paths change when a
                    np.savez(f, *optimizer_state(self.model.optimizer).values())  # model is loaded)

            files.atomic(folder / "optimizer.tmp.npz", folder / OPTIMIZER_FILE, write)
        state = {"step": self.step, "genome": to_json(self.genome), "seed": self.seed,
                 "train_seconds": self.train_seconds, "rng": self._rng.bit_generator.state, "token": token}
        self.token = token
        files.atomic(folder / "state.tmp.json", folder / "state.json", lambda tmp: tmp.write_text(json.dumps(state)))
        return path

    def restore(self, folder: str | os.PathLike[str]) -> None:
        """Load a checkpoint written by `save` (possibly another trial's): architecture, weights, genome, and
        the optimizer's state when the checkpoint holds it (its learning rate is this runner's: PBT may have
        perturbed it)."""
        folder = Path(folder)
        state = json.loads((folder / "state.json").read_text())
        with self.scope():
            self.model = keras.saving.load_model(folder / "model.keras", compile=False)
            self._compile()  # the space's optimizer, at this runner's learning rate
            if (folder / OPTIMIZER_FILE).is_file():
                opt = self.model.optimizer
                opt.build(self.model.trainable_variables)
                with np.load(folder / OPTIMIZER_FILE) as saved:
                    values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
                if [tuple(v.shape) for v in values] == [tuple(v.shape) for v in opt.variables]:
                    set_optimizer_state(opt, dict(zip(slot_keys(opt), values)), skip=("learning_rate",))
        self.step, self.genome = int(state["step"]), from_json(state["genome"])
        self.train_seconds = float(state.get("train_seconds", 0.0))
        if "rng" in state:
            self._rng.bit_generator.state = state["rng"]
