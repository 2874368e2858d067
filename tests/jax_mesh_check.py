"""Run under KERAS_BACKEND=jax with XLA_FLAGS=--xla_force_host_platform_device_count=2 (two CPU devices stand in
for two GPUs or a TPU's cores): compress (low-rank, refreshed in the step) -> fit (steps_per_execution 4) -> strip -> save -> load under the
data-parallel mesh mutate gives a multi-device JAX trial, against the same run on one device. Prints one JSON line."""

import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

import mutate
from mutate.search.devices import make_strategy, scope


def run(parallel: bool) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    strategy = make_strategy("mirrored", backend="jax") if parallel else None
    with scope(strategy):
        model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="d1"),
                                  keras.layers.Dense(2, name="out")])
        for w in model.weights:
            w.assign(rng.normal(scale=0.3, size=tuple(w.shape)).astype("float32"))
        mutate.compress(model, {"d1": ("low_rank", {"rank": 4})}, mutate.Schedule(4, 20, 4), refresh=True)
        model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      steps_per_execution=4)
        model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
        state = mutate.kernel(model, "d1").compression
        out = {"devices": len(keras.distribution.list_devices()), "step": state.current_step(),
               "alpha": state.current_alpha()}
        mutate.strip(model)
        pred = model.predict(x[:32], verbose=0)
        with tempfile.TemporaryDirectory() as d:
            model.save(Path(d) / "m.keras")
            again = keras.saving.load_model(Path(d) / "m.keras").predict(x[:32], verbose=0)
    out.update(pred=pred.tolist(), roundtrip=float(np.abs(pred - again).max()))
    return out


if __name__ == "__main__":
    print(json.dumps({"parallel": run(True), "single": run(False)}))
    sys.stdout.flush()
