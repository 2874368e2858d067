"""What each operator's spliced LeNet-300-100 weighs as a LiteRT (.tflite) file, against the bytes mutate counts.

    .venv/bin/python experiments/litert_sizes.py [--out experiments/litert_sizes.csv]

fc1 (784x300) and fc2 (300x100) compressed by one operator, blended over 4 steps on random data, spliced;
then converted three ways: Keras' own ``model.export(format="litert")`` (resource variables on), a SavedModel
through ``tf.lite.TFLiteConverter`` with default settings (variables frozen into constants), and the same
with ``EXPERIMENTAL_SPARSITY``. Each file is loaded in the interpreter and its outputs compared with Keras'
(max |difference| on 256 rows). The fixed overhead of a graph is the dense model's file size less its
counted bytes. A benchmark of sizes, not a test.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

import mutate  # noqa: E402

OPERATORS = [("dense", {}), ("low_rank", {"rank": 16}), ("pruning", {"sparsity": 0.9}), ("kmeans", {"k": 16}),
             ("kmeans", {"k": 64, "block_size": 10}), ("simhash", {"rank": 256}), ("random_projection", {"rank": 64}),
             ("dictionary", {"atoms": 64, "n_nonzero": 4}), ("nmf", {"rank": 16}),
             ("pruning+kmeans", {"sparsity": 0.9, "k": 16}), ("pruning+kmeans+huffman", {"sparsity": 0.9, "k": 16})]
"""The last stack's count is entropy-coded; its file holds the arrays before coding (operators/stack.py)."""


def lenet(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(300, activation="relu", name="fc1"),
                             keras.layers.Dense(100, activation="relu", name="fc2"),
                             keras.layers.Dense(10, name="logits")], name="lenet_300_100")


def spliced(op: str, params: dict) -> keras.Model:
    model = lenet()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((256, 784)).astype("float32"), rng.integers(0, 10, 256)
    if op == "dense":
        return model
    mutate.compress(model, {"fc1": (op, params), "fc2": (op, params)}, mutate.Schedule(0, 3, 1))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[mutate.CompressionCallback()])
    return mutate.strip(model)


def convert(model: keras.Model, how: str) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as d:
        if how == "mutate":
            from mutate.operator.anchor import exporting

            path = Path(d) / "m.tflite"
            with exporting():
                model.export(str(path), format="litert", verbose=False)
            return path.read_bytes()
        if how == "keras_litert":
            path = Path(d) / "m.tflite"
            model.export(str(path), format="litert", verbose=False)
            return path.read_bytes()
        model.export(d, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(d)
        if how == "sparsity":
            converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        return converter.convert()


def constant_bytes(blob: bytes) -> int:
    """Bytes of the file's constant buffers (its stored arrays); the rest is the graph (ops, tensors, names)."""
    import contextlib
    import io
    import re

    import tensorflow as tf

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_content=blob)
    return sum(int(m.group(1)) for m in re.finditer(r"RO (\d+) bytes", text.getvalue()))


def run_tflite(blob: bytes, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=blob)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(out["index"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".csv")))
    args = ap.parse_args()
    x = np.random.default_rng(1).standard_normal((256, 784)).astype("float32")
    rows = []
    for op, params in OPERATORS:
        model = spliced(op, params)
        counted = mutate.model_size(model).bits // 8
        want = model.predict(x, verbose=0)
        with tempfile.TemporaryDirectory() as d:  # as `mutate export` writes it: no optimizer state
            model.save(Path(d) / "trained.keras")
            keras.saving.load_model(Path(d) / "trained.keras", compile=False).save(Path(d) / "m.keras")
            keras_bytes = (Path(d) / "m.keras").stat().st_size
        row = {"operator": op, "params": params, "counted": counted, "keras": keras_bytes}
        for how in ("mutate", "keras_litert", "saved_model", "sparsity"):
            blob = convert(model, how)
            row[how] = len(blob)
            row[f"{how}_gzip"] = len(gzip.compress(blob))
            row[f"{how}_maxdiff"] = float(np.abs(run_tflite(blob, x) - want).max())
            row[f"{how}_constants"] = constant_bytes(blob)
        rows.append(row)
        print(f"{op:<18}{str(params):<30} counted {counted:>9,} | .keras {keras_bytes:>9,} | mutate litert {row['mutate']:>9,} = arrays "
              f"{row['mutate_constants']:>9,} + graph {row['mutate'] - row['mutate_constants']:>6,} "
              f"({row['mutate'] / counted:.2f}x counted, gz {row['mutate_gzip']:>9,}, |d| {row['mutate_maxdiff']:.1e}) | keras litert {row['keras_litert']:>9,} "
              f"(gz {row['keras_litert_gzip']:>9,}, |d| {row['keras_litert_maxdiff']:.1e}) | saved_model "
              f"{row['saved_model']:>9,} | sparsity {row['sparsity']:>9,}", flush=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dense = rows[0]
    print(f"graph overhead (dense file - counted): keras litert {dense['keras_litert'] - dense['counted']:,} B, "
          f"saved_model {dense['saved_model'] - dense['counted']:,} B")


if __name__ == "__main__":
    main()
