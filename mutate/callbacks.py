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
    """Advances each blended layer's own step and alpha before every training batch.

    At each layer's update steps it computes or refreshes that layer's factors from its current kernel
    (in NumPy, off the graph) and assigns its alpha; nothing retraces. A blended layer refuses to train
    without this callback. On JAX, whose ``fit`` trains on a copy of the model's state, it first syncs that
    state into the variables (``model.jax_state_sync()``) at the batches where some layer has an update due,
    and ``fit`` then re-reads what it assigned; other batches cost no sync.

    Args:
        verbose: 1 prints a line when a layer's alpha reaches 0 (it can then be spliced with `mutate.strip`).
    """

    def __init__(self, verbose: int = 0) -> None:
        super().__init__()
        self.verbose = verbose
        self._layers: list[BlendedLayer] = []
        self._jax = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        spe = getattr(self.model, "steps_per_execution", 1)
        self._layers = blended_layers(self.model)
        if self._layers and int(spe) != 1:
            raise ValueError(f"CompressionCallback needs compile(steps_per_execution=1) so that it sees every "
                             f"batch, but got steps_per_execution={spe}.")
        self._jax = keras.backend.backend() == "jax"
        for layer in self._layers:
            layer.sync_host()
            layer.set_driven(True)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self._jax and any(layer.due() for layer in self._layers):
            # JAX's fit trains on a copy of the state (the variables may even be purged): write it back into the
            # variables, so the factoring reads the live kernel; fit then re-reads the state we assign.
            self.model.jax_state_sync()
        for layer in self._layers:
            layer.advance()
            if self.verbose and layer._host_step - 1 == layer.schedule.final_step:
                print(f"mutate: layer {layer.name!r} reached alpha=0 at its step {layer.schedule.final_step}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for layer in self._layers:
            layer.set_driven(False)
