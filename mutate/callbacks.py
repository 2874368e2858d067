"""`CompressionCallback`: drives every blended layer's schedule during `fit`."""

from __future__ import annotations

from typing import Any, Iterator

import keras

from mutate.layers import BlendedLayer


def iter_layers(model: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every leaf layer of ``model``, descending into nested models."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def blended_layers(model: keras.layers.Layer) -> list[BlendedLayer]:
    """The blended (still compressing) layers of ``model``."""
    return [layer for layer in iter_layers(model) if isinstance(layer, BlendedLayer)]


class CompressionCallback(keras.callbacks.Callback):
    """Computes and refreshes each blended layer's factors when its schedule asks for them.

    Alpha is a function of each layer's own step, computed in the training graph; this callback does the
    host work only: at a layer's first update (and, with ``refresh``, at each later update while alpha > 0)
    it factors that layer's current kernel in NumPy and assigns the factors; nothing retraces. With
    ``compile(steps_per_execution=N)`` it runs once per execution of N batches, and an update that falls
    inside an execution has its factors computed at the execution's start (alpha still changes at the exact
    step). A blended layer refuses to train without this callback. On JAX, whose ``fit`` trains on a copy of
    the model's state, it first syncs that state into the variables (``model.jax_state_sync()``) at the
    executions where some layer has factors due, and ``fit`` then re-reads what it assigned; other executions
    cost no sync.

    Args:
        verbose: 1 prints a line when a layer's alpha reaches 0 (it can then be spliced with `mutate.strip`).
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__()
        self.verbose = verbose
        self._layers: list[BlendedLayer] = []
        self._jax = False
        self._spe = 1

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._layers = blended_layers(self.model)
        self._spe = max(1, int(getattr(self.model, "steps_per_execution", 1) or 1))
        self._jax = keras.backend.backend() == "jax"
        for layer in self._layers:
            layer.set_driven(True)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # the host count restarts from the variables: an epoch's last execution may hold fewer batches
        if self._jax:
            self.model.jax_state_sync()
        for layer in self._layers:
            layer.sync_host()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        n = self._spe
        if self._jax and any(layer.due(n) for layer in self._layers):
            # JAX's fit trains on a copy of the state (the variables may even be purged): write it back into the
            # variables, so the factoring reads the live kernel; fit then re-reads the state we assign.
            self.model.jax_state_sync()
        for layer in self._layers:
            before = layer._host_step
            layer.advance(n)
            final = layer.schedule.final_step
            if self.verbose and before <= final < layer._host_step:
                print(f"mutate: layer {layer.name!r} reaches alpha=0 at its step {final}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for layer in self._layers:
            layer.set_driven(False)
