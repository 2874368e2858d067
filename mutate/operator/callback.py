"""`CompressionCallback`: drives every blending kernel's schedule during `fit`."""

from __future__ import annotations

import functools
from typing import Any

import keras

from mutate.operator.kinds import Slot
from mutate.operator.state import KernelState
from mutate.operator.surgery import blending


class _Driven:
    """A blending kernel as the callback sees it: its state, and how to read its A as a matrix."""

    def __init__(self, layer: keras.layers.Layer, slot: Slot, path: str) -> None:
        self.layer, self.slot, self.path = layer, slot, path
        self.state: KernelState = getattr(layer, f"mutate_{slot.name}")

    @property
    def name(self) -> str:
        return self.path

    def __getattr__(self, attr: str) -> Any:  # current_alpha, current_step, compressor, schedule, ...
        return getattr(self.__dict__["state"], attr)

    def a_matrix(self) -> Any:
        return self.state.view.to_matrix(keras.ops.convert_to_numpy(self.slot.variable(self.layer)))


def blending_kernels(model: keras.Model) -> list[_Driven]:
    """The kernels of ``model`` that are still blending."""
    return [_Driven(k.layer, k.slot, k.path) for k in blending(model)]


class CompressionCallback(keras.callbacks.Callback):
    """Computes and refreshes each blending kernel's factors when its schedule asks for them.

    Alpha is a function of each kernel's own step, computed in the training graph; this callback does the
    host work only: at a kernel's first update (and, with ``refresh``, at each later update while alpha > 0)
    it factors the current A in NumPy and assigns the factors; nothing retraces. With
    ``compile(steps_per_execution=N)`` it runs once per execution of N batches, and an update that falls
    inside an execution has its factors computed at the execution's start (alpha still changes at the exact
    step). On TensorFlow and JAX the refreshes of operators with an in-graph refresh (`low_rank`, `pruning`)
    run inside the training step at their exact step instead (`KernelState.graph_refresh`); only their first
    factoring is host work. A blending layer refuses to train without this callback. On JAX, whose ``fit`` trains on a copy of
    the model's state, it first syncs that state into the variables (``model.jax_state_sync()``) at the
    executions where some kernel has factors due, and ``fit`` then re-reads what it assigned; other
    executions cost no sync.

    Args:
        verbose: 1 prints a line when a kernel's alpha reaches 0 (it can then be spliced with `mutate.strip`).
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__()
        self.verbose = verbose
        self._kernels: list[_Driven] = []
        self._folded: list[_Driven] = []
        self._jax = False
        self._spe = 1
        self._epoch_len: int | None = None  # batches an epoch of unknown length held (learnt at the next epoch)
        self._epoch_first: int | None = None

    def set_model(self, model: keras.Model) -> None:
        # before fit builds its train function (Keras takes `model.train_step` then, before on_train_begin)
        super().set_model(model)
        if blending(model):
            phase_steps(model)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._kernels = blending_kernels(self.model)
        self._folded = []
        self._spe = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        self._jax = keras.backend.backend() == "jax"
        for k in self._kernels:
            k.state.set_driven(True)
        self._epoch_len = self._epoch_first = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # the host count restarts from the variables: an epoch's last execution may hold fewer batches
        if self._jax and self._kernels:
            self.model.jax_state_sync()
        for k in self._kernels:
            k.state.sync_host()
        if self._kernels:  # a dataset of unknown length: the epoch before held as many batches as the step moved
            now = self._kernels[0].state._host_step
            if self._epoch_first is not None and now > self._epoch_first:
                self._epoch_len = now - self._epoch_first
            self._epoch_first = now

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # this execution's batches: an epoch's last one may hold fewer than steps_per_execution (once counted
        # in full, an update at the next epoch's first batch was factored an execution early)
        steps = (self.params or {}).get("steps") or self._epoch_len
        n = self._spe if not steps else max(1, min(self._spe, int(steps) - batch))
        due = [k for k in self._kernels if k.state.refactor_at(n) is not None]
        if not steps and n > 1:
            # the first epoch of a dataset of unknown length: this execution may end the epoch before n
            # batches, so a first factoring due inside it (perhaps at the next epoch's first batch) waits for
            # an execution that starts at or after it (alpha holds at 1 until the factors exist)
            due = [k for k in due if k.state._host_factored or k.state.refactor_at(1) is not None]
        # a JAX refresh moves a trainable factor through its shift; once the last one has run, fold the shifts
        # into the factors (once per fit), so weight decay acts on the factor the layer uses
        fold = [k for k in self._kernels if k.state.shifts and k not in self._folded
                and k.state._host_step > k.state.schedule.final_step]
        if fold:
            self.model.jax_state_sync()
            for k in fold:
                k.state.fold_shifts()
                self._folded.append(k)
        if due and self._jax:
            # JAX's fit trains on a copy of the state: write it back into the variables, so the factoring
            # reads the live kernel; fit then re-reads the state we assign.
            self.model.jax_state_sync()
        for k in due:
            k.state.refactor(k.a_matrix())
            k.state._host_factored = True
        for k in self._kernels:
            before = k.state._host_step
            k.state._host_step += n
            final = k.state.schedule.final_step
            if self.verbose and before <= final < k.state._host_step:
                print(f"mutate: {k.path!r} reaches alpha=0 at its step {final}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for k in self._kernels:
            k.state.set_driven(False)


def phase_steps(model: keras.Model) -> None:
    """Give ``model``'s own train, test and predict steps the phase (`mutate.operator.state.PHASE`) that
    layers nobody gave a ``training`` read: a compressed model's class does it
    (`mutate.operator.model.CompressedModel`); a model mutate did not compress (a wrapper around a compressed
    sub-model, trained with this callback) gets it on the instance, once. Nothing else counts as training:
    not a call of the model from a callback, not an ``evaluate`` or ``predict`` run inside ``fit``."""
    from mutate.operator.model import CompressedModel, _in_phase

    if isinstance(model, CompressedModel) or model.__dict__.get("_mutate_phased"):
        return
    for name, training in (("train_step", True), ("test_step", False), ("predict_step", False)):
        step = getattr(model, name)
        object.__setattr__(model, name, functools.partial(_phased, training, step, _in_phase))
    object.__setattr__(model, "_mutate_phased", True)


def _phased(training: bool, step: Any, in_phase: Any, *args: Any, **kwargs: Any) -> Any:
    return in_phase(training, step, args, kwargs)
