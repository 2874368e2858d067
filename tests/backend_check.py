"""Run under one Keras backend (KERAS_BACKEND) by tests/test_backends.py: compress -> fit (an update mid-epoch,
optionally steps_per_execution > 1) -> strip -> save -> load, from fixed weights and data, for each case given
(``operator:begin:spe:frequency``). Prints one JSON line per case."""

import json
import sys
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np

import mutate


def main(begin: int, operator: str, spe: int = 1, frequency: int = 5) -> dict:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 16)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="d1"),
                              keras.layers.Dense(2, name="out")])
    for w in model.weights:  # the same start on every backend
        w.assign(rng.normal(scale=0.3, size=tuple(w.shape)).astype("float32"))
    params = {"low_rank": {"rank": 4}, "pruning": {"sparsity": 0.8}, "kmeans": {"k": 8}}[operator]
    sched = mutate.Schedule(begin_step=begin, end_step=begin + 4 * frequency, frequency=frequency)
    with warnings.catch_warnings(record=True) as seen:  # e.g. JAX truncating an int64 variable without x64
        warnings.simplefilter("always")
        cm = mutate.compress(model, {"d1": (operator, params)}, sched, refresh=True)
        cm.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   steps_per_execution=spe)
        cm.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[mutate.CompressionCallback()])
        with tempfile.TemporaryDirectory() as d:  # mid-blend (on JAX a refreshed factor lives in its shift)
            cm.save(Path(d) / "mid.keras")
            mid = keras.saving.load_model(Path(d) / "mid.keras")
        mid_roundtrip = float(np.abs(cm.predict(x[:64], verbose=0) - mid.predict(x[:64], verbose=0)).max())
        for m in (cm, mid):  # the loaded model resumes the schedule (and its optimizer) where the saved one was
            m.fit(x, y, batch_size=32, epochs=2, initial_epoch=1, shuffle=False, verbose=0,
                  callbacks=[mutate.CompressionCallback()])
        resumed = float(np.abs(cm.predict(x[:64], verbose=0) - mid.predict(x[:64], verbose=0)).max())
    layer = mutate.kernel(cm, "d1").compression
    out = {"backend": keras.backend.backend(), "step": layer.current_step(), "alpha": layer.current_alpha(),
           "mid_roundtrip": mid_roundtrip, "resumed": resumed,
           "dtype_truncated": [str(w.message)[:200] for w in seen if "truncated to dtype" in str(w.message)]}
    spliced = mutate.strip(cm)
    if keras.backend.backend() == "torch":  # torch's view of the model: A dropped, the packed arrays in
        live = {id(w.value) for w in spliced.weights}
        params = list(spliced.parameters())
        out["torch_params_stale"] = sum(int(p.numel()) for p in params if id(p) not in live)
        out["torch_params_missing"] = len(live - {id(p) for p in params})
    pred = spliced.predict(x[:64], verbose=0)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.keras"
        spliced.save(path)
        again = keras.saving.load_model(path).predict(x[:64], verbose=0)
    out.update(pred=pred.tolist(), roundtrip=float(np.abs(pred - again).max()),
               bytes=mutate.model_size(spliced).bits // 8, layers=[f"{type(ly).__name__}:{mutate.kernel(spliced, ly.name).state}" for ly in spliced.layers])
    return out


if __name__ == "__main__":  # each argument one case, operator:begin:spe:frequency; one JSON line per case
    for case in sys.argv[1:]:
        operator, *ints = case.split(":")
        print(json.dumps({"case": case, **main(int(ints[0]), operator, *(int(a) for a in ints[1:]))}), flush=True)
