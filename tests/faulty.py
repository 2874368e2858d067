"""Model builders that fail on purpose, for the fault tests (referenced from YAML as tests.faulty:NAME).

In the driver's check build (no trial) every builder returns a healthy MLP, so a space using one passes
validation; the faults happen only inside Ray workers.
"""

import os
import sys

import keras
import numpy as np

from mutate.search.builders import mlp


def _in_ray_worker() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def trial_index() -> int | None:
    """The index (0, 1, ...) of the Ray Tune trial whose trainable is building this model, or None outside a
    trial (the driver's check build).

    A class trainable has no `ray.tune.get_context()` session, so this finds the `tune.Trainable` up the call
    stack (``setup`` or ``reset_config`` of `mutate.search.runner.MutationTrainable`) and reads its ``trial_id``,
    which Tune makes ``<experiment prefix>_<index:05d>``.
    """
    if "ray.tune" not in sys.modules:
        return None
    from ray.tune import Trainable

    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Trainable) and owner.trial_id != "default":
            return int(owner.trial_id.rsplit("_", 1)[-1])
        frame = frame.f_back
    return None


def _fail_once(marker: str) -> None:
    """Raises the first time it is called for ``marker`` (a file it creates), on any process."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return
    raise RuntimeError("flaky builder: failing once on purpose")


def crashing_mlp(data, *, crash_trial: int, nan_trial: int = -1, nan_after: int = 0, flaky_trial: int = -1,
                 marker: str | None = None, **kwargs):
    """Raises every time it is built for trial ``crash_trial`` (so every retry fails too); for trial
    ``nan_trial`` returns `nan_mlp`'s model, whose loss becomes NaN after ``nan_after`` training batches;
    raises the first time it is built for trial ``flaky_trial`` (once per ``marker`` file); a plain MLP
    for every other trial and build."""
    index = trial_index()
    if index is not None and index == crash_trial:
        raise RuntimeError(f"crashing builder: trial {index} always fails on purpose")
    if index is not None and index == flaky_trial:
        _fail_once(marker)
    if index is not None and index == nan_trial:
        return _poisoned(data, nan_after, **kwargs)
    return mlp(data, **kwargs)


@keras.saving.register_keras_serializable(package="mutate_tests")
class NanAfter(keras.layers.Layer):
    """The identity until it has seen ``after`` training batches, then NaN everywhere. Its batch count is a
    weight, so it travels through checkpoints and model surgery."""

    def __init__(self, after: int, **kwargs):
        super().__init__(**kwargs)
        self.after = int(after)

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(), initializer="zeros", trainable=False, name="seen")

    def call(self, x, training=False):
        if training:
            self.seen.assign_add(1.0)
        return x * keras.ops.where(self.seen > self.after, np.float32("nan"), np.float32(1.0))

    def get_config(self):
        return {**super().get_config(), "after": self.after}


def _poisoned(data, after: int, **kwargs):
    model = mlp(data, **kwargs)
    layers = [keras.Input(data.x_train.shape[1:])]
    for layer in model.layers:
        layers.append(layer)
        if layer.name == "dense_1":
            layers.append(NanAfter(after, name="nan_after"))
    return keras.Sequential(layers, name="mlp")


def nan_weight_mlp(data, *, layer: str = "dense_2", value: float = float("nan"), **kwargs):
    """A plain MLP whose ``layer`` kernel holds ``value`` (NaN or Inf) at [0, 0]: for the driver's check."""
    model = mlp(data, **kwargs)
    kernel = model.get_layer(layer).kernel
    w = keras.ops.convert_to_numpy(kernel).copy()
    w[0, 0] = value
    kernel.assign(w)
    return model
