"""Training-step and inference time of blended and spliced LeNet-300-100 against the dense model, one process.

A benchmark, not a test: it prints ratios against the dense anchor measured in the same run. Inference is
timed twice: a traced Keras call (TensorFlow's dispatch, about 0.5 ms per call here, dominates at batch 1),
and the TensorFlow Lite interpreter on one thread (the runtime a phone would use).

    .venv/bin/python experiments/bench_overhead.py [--steps 200] [--batch 128]
    KERAS_BACKEND=jax .venv/bin/python experiments/bench_overhead.py    # the training and inference rows on JAX

Training steps: the blended model with no update in the timed epochs (the blend alone), at
steps_per_execution 1 and 32; and the blend as the search runs it (refresh on, an update every 25 steps),
averaged over a whole 500-step window, update steps included (on TensorFlow and JAX low-rank refreshes run in
the training graph: a warm-started subspace iteration, ~2 ms per layer here, instead of a host SVD). Models
alternate in rounds and each row shows the minimum per model (`--repeats`, default 5).
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

import mutate


WIDTHS = {"lenet": (300, 100), "wide": (4096, 4096)}
"""Hidden widths of the benchmarked MLPs (784 inputs, 10 outputs): LeNet-300-100, and a wide MLP for GPUs."""
RANKS = {"lenet": (16, 12), "wide": (256, 512)}
"""low_rank ranks of fc1 and fc2 (at most 1/8 of the widths)."""
_MODEL = ["lenet"]
REPEATS = 5
"""Interleaved rounds per timing (`--repeats`)."""


def lenet(seed: int = 0) -> keras.Model:
    """The benchmarked MLP (`--model`; LeNet-300-100 by default)."""
    keras.utils.set_random_seed(seed)
    h1, h2 = WIDTHS[_MODEL[0]]
    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(h1, activation="relu", name="fc1"),
                             keras.layers.Dense(h2, activation="relu", name="fc2"), keras.layers.Dense(10, name="fc3")])


def extra_arithmetic(widths: tuple[int, ...], ranks: tuple[int, ...]) -> float:
    """The blend's extra multiply-adds per training example as a share of the dense model's (forward and
    backward; the first layer needs no input gradient): rank-r factors of the first ``len(ranks)`` layers."""
    dims = (784, *widths, 10)
    dense = extra = 0
    for i, (m, n) in enumerate(zip(dims, dims[1:])):
        dense += m * n * (2 if i == 0 else 3)  # forward, weight gradient, input gradient
        if i < len(ranks):
            r = ranks[i]
            extra += (m * r + r * n) * 2 + r * n + (m * r if i else 0)  # forward, factor grads, inner/input grads
    return extra / dense


def _device() -> str:
    """The device the Keras backend computes on, in words (e.g. ``gpu: NVIDIA H200``, ``cpu``)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        d = jax.devices()[0]
        return f"{d.platform}: {getattr(d, 'device_kind', '')}"
    if backend == "tensorflow":
        import tensorflow as tf

        return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    return "cpu"


def _compiled(model: keras.Model, spe: int) -> keras.Model:
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=spe)
    return model


def step_times(runs: dict[str, tuple[keras.Model, list]], x: np.ndarray, y: np.ndarray, batch: int, spe: int = 1,
               reps: int = REPEATS) -> dict[str, float]:
    """Seconds per training step of each (model, callbacks): one warm-up epoch each (tracing), then ``reps``
    rounds in which every model trains one epoch in turn; the minimum per model (this VM's step times drift by
    tens of percent over seconds: interleaving exposes every model to the same drift, the minimum drops it)."""
    for model, callbacks in runs.values():
        _compiled(model, spe).fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps):
        for name, (model, callbacks) in runs.items():
            t = time.perf_counter()
            model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
            times[name].append((time.perf_counter() - t) / (len(x) // batch))
    return {name: min(v) for name, v in times.items()}


def step_time(model: keras.Model, x: np.ndarray, y: np.ndarray, batch: int, callbacks: list, spe: int = 1) -> float:
    """Median seconds per training step over 5 epochs, after one warm-up epoch (tracing); one model alone
    (`bench_spliced.py`; this script's own rows use `step_times`)."""
    _compiled(model, spe).fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=callbacks)
        times.append((time.perf_counter() - t) / (len(x) // batch))
    return float(np.median(times))


def window_time(model: keras.Model, x: np.ndarray, y: np.ndarray, batch: int, warm: int, window: int,
                spe: int) -> float:
    """Mean seconds per step over a whole blend window, update steps included: ``warm`` steps first (tracing;
    the schedule begins after them), then ``window`` steps timed as one fit."""
    _compiled(model, spe)
    cb = [mutate.CompressionCallback()] if mutate.blending_kernels(model) else []
    model.fit(x[: warm * batch], y[: warm * batch], batch_size=batch, epochs=1, verbose=0, callbacks=cb)
    t = time.perf_counter()
    model.fit(x[: window * batch], y[: window * batch], batch_size=batch, epochs=1, verbose=0, callbacks=cb)
    return (time.perf_counter() - t) / window


def infer_time(model: keras.Model, x: np.ndarray, batch: int, reps: int = 500) -> float:
    """Median seconds per forward pass of a traced call (``tf.function``; on other backends Keras'
    compiled ``predict_on_batch``), so Python overhead is mostly excluded."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        forward = tf.function(lambda t: model(t, training=False))
        xb = tf.constant(x[:batch])
    else:
        forward, xb = model.predict_on_batch, x[:batch]
    forward(xb)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            forward(xb)
        times.append((time.perf_counter() - t) / reps)
    return float(np.median(times))


def tflite_interpreter(model: keras.Model) -> tuple[object, int]:
    """The model converted to TensorFlow Lite (via a SavedModel export; builtin ops only), and its size in bytes.

    The interpreter runs one thread (XNNPACK), as on a phone core. ``ai_edge_litert`` is used when installed;
    otherwise TensorFlow's own ``tf.lite.Interpreter`` (deprecated, still shipped with TF 2.21).
    """
    import tempfile
    import warnings

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as d:
        model.export(d, format="tf_saved_model", verbose=False)
        blob = tf.lite.TFLiteConverter.from_saved_model(d).convert()
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Interpreter(model_content=blob, num_threads=1), len(blob)


def tflite_time(interpreter: object, x: np.ndarray, batch: int, reps: int = 500) -> float:
    """Median seconds per ``invoke`` at ``batch`` rows (5 repeats of ``reps`` calls)."""
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, (batch, x.shape[1]))
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x[:batch])
    interpreter.invoke()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            interpreter.invoke()
        times.append((time.perf_counter() - t) / reps)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", choices=sorted(WIDTHS), default="lenet")
    parser.add_argument("--window", type=int, default=500, help="blend-window steps of the refresh rows")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved rounds per timing")
    parser.add_argument("--arithmetic", action="store_true", help="print only the blend's extra arithmetic")
    args = parser.parse_args()
    _MODEL[0] = args.model
    r1, r2 = RANKS[args.model]
    share = extra_arithmetic(WIDTHS[args.model], (r1, r2))
    arithmetic = (f"arithmetic: the blend adds {100 * share:.1f}% multiply-adds per training step (forward and "
                  f"backward), so a blended step at {1 + share:.2f}x of dense is compute-bound parity")
    if args.arithmetic:
        print(arithmetic)
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.steps * args.batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    plan = {"fc1": ("low_rank", {"rank": r1}), "fc2": ("low_rank", {"rank": r2})}
    dense = lenet()
    # any per-batch callback makes Keras sync every step; this isolates that cost from the blend itself
    hook = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda batch, logs: None)
    # a window longer than the run: every timed step blends (alpha strictly between 0 and 1)
    blended = mutate.compress(lenet(), plan, mutate.Schedule(0, 100 * args.steps, args.steps))
    done = mutate.compress(lenet(), plan, mutate.Schedule(0, 0, 1))
    done.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    done.fit(x[: args.batch], y[: args.batch], verbose=0, callbacks=[mutate.CompressionCallback()])
    spliced = mutate.strip(done)
    t = step_times({"dense": (dense, []), "hook": (lenet(), [hook]), "blend": (blended, [mutate.CompressionCallback()]),
                    "spliced": (spliced, [])}, x, y, args.batch, reps=args.repeats)
    t32 = step_times({"dense": (lenet(), []), "blend": (mutate.compress(lenet(), plan, mutate.Schedule(
        0, 100 * args.steps, args.steps)), [mutate.CompressionCallback()])}, x, y, args.batch, spe=32,
        reps=args.repeats)
    # as the search runs it (fashion_mlp.yaml): refresh on, an update every 25 steps over a 500-step window;
    # the mean over the whole window, update steps included, at steps_per_execution 1 and 32; dense and
    # blended windows alternate (fresh models each round), the minimum of each
    window, warm = args.window, 64
    xw = np.concatenate([x] * (-(-window // args.steps)))
    yw = np.concatenate([y] * (-(-window // args.steps)))
    search_rows = []
    for spe in (1, 32):
        rounds = []
        for _ in range(args.repeats):
            td = window_time(lenet(), xw, yw, args.batch, warm, window, spe)
            blend = mutate.compress(lenet(), plan, mutate.Schedule(warm, warm + window - 1, 25), refresh=True)
            rounds.append((td, window_time(blend, xw, yw, args.batch, warm, window, spe)))
        td, tb = min(r[0] for r in rounds), min(r[1] for r in rounds)
        search_rows.append(f"blend window (refresh, update every 25 steps, {window} steps, steps_per_execution "
                           f"{spe:>2})  dense {1e3 * td:.3f} ms | blended {1e3 * tb:.3f} ms ({tb / td:.2f}x; "
                           f"per round: {', '.join(f'{b / d:.2f}' for d, b in rounds)})")
    print(f"MLP 784-{'-'.join(map(str, WIDTHS[args.model]))}-10, low_rank fc1 r={r1} fc2 r={r2}, batch {args.batch}, "
          f"{args.steps} steps/epoch, {keras.backend.backend()} backend on {_device()}; minimum of {args.repeats} "
          "interleaved rounds")
    print(arithmetic)
    print(f"train step  dense {1e3 * t['dense']:.3f} ms | dense + empty batch callback {1e3 * t['hook']:.3f} ms "
          f"({t['hook'] / t['dense']:.2f}x)")
    print(f"train step  dense {1e3 * t['dense']:.3f} ms | blended {1e3 * t['blend']:.3f} ms "
          f"({t['blend'] / t['dense']:.2f}x) | spliced {1e3 * t['spliced']:.3f} ms ({t['spliced'] / t['dense']:.2f}x)")
    print(f"train step (steps_per_execution 32)  dense {1e3 * t32['dense']:.3f} ms | blended "
          f"{1e3 * t32['blend']:.3f} ms ({t32['blend'] / t32['dense']:.2f}x)")
    print("\n".join(search_rows))
    for b in (1, 256):
        td, ts = infer_time(dense, x, b), infer_time(spliced, x, b)
        print(f"inference batch {b:>3}  dense {1e6 * td:.1f} us | spliced {1e6 * ts:.1f} us ({ts / td:.2f}x)")
    if keras.backend.backend() != "tensorflow":  # the TFLite rows need TensorFlow's converter
        print(f"size: {mutate.model_size(spliced).ratio:.1f}x fewer bits than dense")
        return
    (lite_dense, bytes_dense), (lite_spliced, bytes_spliced) = tflite_interpreter(dense), tflite_interpreter(spliced)
    for b in (1, 256):
        td, ts = tflite_time(lite_dense, x, b), tflite_time(lite_spliced, x, b)
        print(f"TFLite batch {b:>3}     dense {1e6 * td:.1f} us | spliced {1e6 * ts:.1f} us ({ts / td:.2f}x)")
    print(f"TFLite file: dense {bytes_dense:,} B | spliced {bytes_spliced:,} B ({bytes_dense / bytes_spliced:.1f}x smaller)")
    print(f"size: {mutate.model_size(spliced).ratio:.1f}x fewer bits than dense")


if __name__ == "__main__":
    main()
