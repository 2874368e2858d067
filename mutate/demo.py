"""The README's main job (until the search lands): compress an MLP on digits mid-training and splice it.

Dense MLP 64-256-256-10 -> train -> `compress` (low_rank on the hidden layers, pruning on the output)
-> blend over a schedule window with `CompressionCallback` -> `strip` -> train on -> compare size and accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import keras

import mutate
import operators
from mutate import files
from mutate.data import digits
from mutate.errors import BadInput


def _mlp(width: int, classes: int) -> keras.Model:
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(width, activation="relu", name="dense_1"),
                             keras.layers.Dense(width, activation="relu", name="dense_2"),
                             keras.layers.Dense(classes, name="logits")], name="mlp")


def _compile(model: keras.Model, lr: float) -> None:
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


def run(*, rank: int = 8, sparsity: float = 0.8, epochs: int = 20, blend_epochs: int = 4, tune_epochs: int = 6,
        batch_size: int = 32, seed: int = 0, out: Path | None = None) -> dict[str, float]:
    """Run the demo and print a dense-vs-compressed table; returns the headline numbers.

    Raises:
        BadInput: a bad rank, sparsity, epoch count or seed (checked before any training).
    """
    try:
        plan = {"dense_*": operators.get("low_rank", rank=rank),
                "logits": operators.get("pruning", sparsity=sparsity)}
    except (ValueError, TypeError) as e:
        raise BadInput(str(e)) from None
    for name, value, low in (("epochs", epochs, 0), ("blend_epochs", blend_epochs, 1), ("tune_epochs", tune_epochs, 0),
                             ("batch_size", batch_size, 1)):
        if value < low:
            raise BadInput(f"`{name}` must be >= {low}, but got {name}={value!r}.")
    if not 0 <= seed < 2**32:
        raise BadInput(f"`seed` must be in [0, 2**32), but got seed={seed!r}.")
    if not 1 <= rank <= 64:  # the digits MLP's 64x256 layer: caught before training, not after
        raise BadInput(f"--rank {rank}: the low-rank rank must be in [1, 64] for the demo's 64x256 layer.")
    if out is not None and Path(out).suffix != ".keras":
        raise BadInput(f"--out {out}: name a .keras file (the demo saves the spliced model in Keras' format).")
    keras.utils.set_random_seed(seed)
    data = digits(seed=seed)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    model = _mlp(256, data.num_classes)
    _compile(model, 1e-3)
    log(f"training the dense MLP 64-256-256-10 for {epochs} epochs on digits ({len(data.x_train)} train images)")
    model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=batch_size, verbose=0)
    dense_acc = model.evaluate(data.x_test, data.y_test, verbose=0)[1]
    dense_size = mutate.model_size(model)
    log(f"dense: test accuracy {dense_acc:.4f}, {dense_size.bits / 8 / 1024:.1f} KiB")

    steps = -(-len(data.x_train) // batch_size)
    schedule = mutate.Schedule(begin_step=0, end_step=blend_epochs * steps - 1, frequency=max(1, steps // 4))
    log(f"compress mid-training: {plan}; {schedule}")
    blended = mutate.compress(model, plan, schedule)
    _compile(blended, 5e-4)
    blended.fit(data.x_train, data.y_train, epochs=blend_epochs, batch_size=batch_size, verbose=0,
                callbacks=[mutate.CompressionCallback()])
    alphas = {k.path: k.current_alpha() for k in mutate.blending_kernels(blended)}
    log(f"blend window done: alpha per layer {alphas}")
    spliced = mutate.strip(blended)
    _compile(spliced, 5e-4)
    spliced.fit(data.x_train, data.y_train, epochs=tune_epochs, batch_size=batch_size, verbose=0)
    acc = spliced.evaluate(data.x_test, data.y_test, verbose=0)[1]
    size = mutate.model_size(spliced)
    log(f"spliced and trained on for {tune_epochs} epochs")
    print()
    print(size)
    print()
    print(f"{'model':<12}{'params':>10}{'bytes':>12}{'accuracy':>10}")
    print(f"{'dense':<12}{dense_size.params:>10}{dense_size.bits // 8:>12}{dense_acc:>10.4f}")
    print(f"{'compressed':<12}{size.params:>10}{size.bits // 8:>12}{acc:>10.4f}")
    print(f"\n{size.ratio:.1f}x fewer bits, accuracy {100 * (acc - dense_acc):+.2f} points")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        files.atomic(out.with_name(out.name + ".tmp.keras"), out, spliced.save)
        print(f"saved the spliced model to {out}")
    return {"dense_accuracy": float(dense_acc), "accuracy": float(acc), "ratio": size.ratio}
