"""A child script for tests/test_backends.py: low-rank with refresh=True trained with AdamW (weight decay), and
a mixed_bfloat16 model saved mid-blend; prints one JSON line (predictions, the shifts left, the round trip)."""
import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

import mutate


def main() -> dict:
    rng = np.random.default_rng(0)
    x = rng.random((64, 12)).astype("float32")
    y = rng.integers(0, 3, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def model():
        m = keras.Sequential([keras.Input((12,)), keras.layers.Dense(16, activation="relu", name="h"),
                              keras.layers.Dense(3, name="o")])
        m.set_weights([np.random.default_rng(1).standard_normal(w.shape).astype("float32") * 0.3 for w in m.weights])
        return m

    m = mutate.compress(model(), {"h": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 16, 4), refresh=True)
    m.compile(keras.optimizers.AdamW(0.01, weight_decay=0.1), loss)
    m.fit(x, y, batch_size=16, epochs=30, verbose=0, shuffle=False, callbacks=[mutate.CompressionCallback()])
    state = mutate.kernel(m, "h").compression
    shifts = float(sum(np.abs(keras.ops.convert_to_numpy(s)).sum() for s in state.shifts.values()))
    pred = m.predict(x, verbose=0)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        b = mutate.compress(model(), {"h": ("low_rank", {"rank": 2})}, mutate.Schedule(0, 20, 4), refresh=True)
        b.compile(keras.optimizers.Adam(0.01), loss)
        b.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=[mutate.CompressionCallback()])
        with tempfile.TemporaryDirectory() as d:
            b.save(Path(d) / "b.keras")
            loaded = keras.saving.load_model(Path(d) / "b.keras")
        roundtrip = float(np.abs(np.asarray(b.predict(x, verbose=0), "float32")
                                 - np.asarray(loaded.predict(x, verbose=0), "float32")).max())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {"backend": keras.backend.backend(), "pred": np.asarray(pred).tolist(), "shifts": shifts,
            "bf16_roundtrip": roundtrip}


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
    sys.exit(0)
