"""Deep Compression's three stages as one mutate stack, on LeNet-300-100 and LeNet-5 / Fashion-MNIST.

    .venv/bin/python experiments/deep_compression.py                      # both models, 2 seeds (~1 h on 2 cores)
    .venv/bin/python experiments/deep_compression.py --models lenet300 --seeds 0
    .venv/bin/python experiments/deep_compression.py --quick              # digits, minutes: a smoke run
    .venv/bin/python experiments/deep_compression.py --long --models lenet300 --configs dc32 mid  # more tuning

Han, Mao, Dally (ICLR 2016) prune each layer (Tables 2, 3: % of weights kept), quantize the kept weights with
k-means (6 bits for LeNet-300-100; 8 bits for LeNet-5's convolutions, 5 for its dense layers) and Huffman-code
the codes and the mask's relative indices. Here each layer carries the stack ``pruning -> kmeans -> huffman``
(`operators/stack.py`), with DC's per-layer keep fractions and bits (config ``dc``) and a tighter one
(``tight``), and two between them (``dc32``: DC's keep fractions at 5 bits; ``mid``). One protocol for every row, per seed:

1. ``dense``: dense training for the protocol's dense epochs; then the same number of further epochs as the
   compressed rows see (the dense anchor, at the fine-tuning learning rate);
2. ``P``: every layer pruned (blend with the mask refreshed from the current weights at every update, then
   spliced), fine-tuned;
3. ``P+Q staged``: from P, each layer's product re-compressed by the whole stack (the same mask; k-means of the
   kept values), blended, spliced, the codebooks and mask fixed, fine-tuned (DC's trained quantization);
4. ``P+Q one blend`` (configs ``dc`` and ``tight``): from the dense weights, the whole stack in one blend (mask
   chosen once, at the first update), spliced, fine-tuned for as many epochs as P and P+Q staged together;
5. ``+H``: the same models, counted with every integer stream entropy-coded (`operators.huffman`: the cheapest
   of canonical Huffman, Huffman-coded bytes and relative indices, tables and tags included).

Sizes: exactly the bits each layer stores, biases (float32) included, against the dense model's float32 bytes.
Accuracy: the test split, once per row (nothing is chosen on it: the configurations are fixed in advance).
Writes ``deep_compression[_quick].csv`` (one row per model, seed, config, stage), ``_layers.csv`` (per layer:
weights, % kept, weight bits and index bits per kept weight, compression after P, P+Q, P+Q+H), the tables in
``deep_compression[_quick].md`` and ``deep_compression[_quick].png``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import mutate  # noqa: E402
import operators  # noqa: E402
from mutate.data import Dataset, digits, fashion_mnist  # noqa: E402
from mutate.operator.host import states  # noqa: E402

# layer -> (sparsity, k): DC's Tables 2 and 3 (kept 8/9/26% at 6 bits; 66/12/8/19% at 8/8/5/5 bits)
CONFIGS: dict[str, dict[str, dict[str, tuple[float, int]]]] = {
    "lenet300": {"dc": {"fc1": (0.92, 64), "fc2": (0.91, 64), "logits": (0.74, 64)},
                 "dc32": {"fc1": (0.92, 32), "fc2": (0.91, 32), "logits": (0.74, 32)},
                 "mid": {"fc1": (0.94, 32), "fc2": (0.93, 32), "logits": (0.75, 32)},
                 "tight": {"fc1": (0.95, 16), "fc2": (0.95, 16), "logits": (0.8, 16)}},
    "lenet5": {"dc": {"conv1": (0.34, 256), "conv2": (0.88, 256), "fc1": (0.92, 32), "logits": (0.81, 32)},
               "tight": {"conv1": (0.5, 64), "conv2": (0.92, 64), "fc1": (0.96, 16), "logits": (0.85, 16)}},
}
# epochs: dense, P blend, P tune, Q blend, Q tune (one blend: P blend, then the other three as tuning)
EPOCHS = {"lenet300": (8, 2, 2, 1, 2), "lenet5": (4, 1, 1, 1, 1)}
QUICK_EPOCHS = (10, 2, 2, 1, 2)
LONG_EPOCHS = {"lenet300": (8, 2, 6, 1, 3), "lenet5": (4, 1, 3, 1, 2)}
"""``--long``: more fine-tuning after pruning (Deep Compression retrains each stage far longer than EPOCHS)."""
BATCH, LR, TUNE_LR, UPDATES_PER_EPOCH = 128, 1e-3, 5e-4, 4
ONE_BLEND = {"dc", "tight"}
"""Configs that also run the one-blend protocol (the comparison of staged and one-blend training)."""


def build(name: str, data: Dataset) -> keras.Model:
    if name == "lenet300":
        return keras.Sequential([keras.Input(data.x_train.shape[1:]),
                                 keras.layers.Dense(300, activation="relu", name="fc1"),
                                 keras.layers.Dense(100, activation="relu", name="fc2"),
                                 keras.layers.Dense(data.num_classes, name="logits")], name="lenet_300_100")
    return keras.Sequential([keras.Input(data.x_train.shape[1:]),
                             keras.layers.Conv2D(20, 5, activation="relu", name="conv1"),
                             keras.layers.MaxPooling2D(2), keras.layers.Conv2D(50, 5, activation="relu", name="conv2"),
                             keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
                             keras.layers.Dense(500, activation="relu", name="fc1"),
                             keras.layers.Dense(data.num_classes, name="logits")], name="lenet5")


def compiled(model: keras.Model, lr: float) -> keras.Model:
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def fit(model: keras.Model, data: Dataset, epochs: int, blend: bool = False) -> None:
    if epochs:
        model.fit(data.x_train, data.y_train, epochs=epochs, batch_size=BATCH, verbose=0,
                  callbacks=[mutate.CompressionCallback()] if blend else [])


def accuracy(model: keras.Model, data: Dataset) -> float:
    return float(model.evaluate(data.x_test, data.y_test, batch_size=512, verbose=0)[1])


def schedule(data: Dataset, epochs: int) -> mutate.Schedule:
    steps = -(-len(data.x_train) // BATCH)
    return mutate.Schedule(begin_step=0, end_step=epochs * steps - 1, frequency=max(1, steps // UPDATES_PER_EPOCH))


def stack(sparsity: float, k: int) -> list[tuple[str, dict[str, Any]]]:
    """DC's stages: prune, k-means the kept values from a linear start (DC's initialisation), Huffman."""
    return [("pruning", {"sparsity": sparsity}), ("kmeans", {"k": k, "init": "linear"}), ("huffman", {})]


def layer_stats(model: keras.Model, cfg: dict[str, tuple[float, int]]) -> dict[str, dict[str, float]]:
    """Per compressed layer: weights, kept, bits stored raw and entropy-coded, and the streams' coded bits."""
    out = {}
    for name in cfg:
        layer = model.get_layer(name)
        st = states(layer)[0][1]
        f = st.factor_values()
        op = st.compressor
        bias = 32 * int(np.prod(layer.bias.shape))
        packed = op.pack(f)
        raw = operators.array_bits(packed) + bias
        row = {"weights": int(np.prod(st.view.shape)), "kept": int(f["mask"].sum()) if "mask" in f else 0,
               "raw_bits": raw, "dense_bits": 32 * int(np.prod(st.view.shape)) + bias}
        if getattr(op, "entropy_coded", False):
            coded = op.encode(f)
            row["coded_bits"] = op.size_bits(f) + bias
            row["index_bits"] = int(coded["bitmask"]["bits"])  # type: ignore[call-overload]
            row["code_bits"] = int(coded["values__codes"]["bits"])  # type: ignore[call-overload]
            row["codebook_bits"] = operators.array_bits({"c": packed["values__codebook"]})
        out[name] = row
    return out


def run_seed(name: str, data: Dataset, seed: int, configs: list[str], epochs: tuple[int, ...],
             rows: list[dict[str, Any]], layers: list[dict[str, Any]], log: Any) -> None:
    dense_e, p_blend, p_tune, q_blend, q_tune = epochs
    extra = p_blend + p_tune + q_blend + q_tune
    keras.utils.set_random_seed(seed)
    dense = compiled(build(name, data), LR)
    fit(dense, data, dense_e)
    w0 = dense.get_weights()
    dense_bits = mutate.model_size(dense).bits
    compiled(dense, TUNE_LR)
    fit(dense, data, extra)
    base = accuracy(dense, data)
    rows.append({"model": name, "seed": seed, "config": "dense", "stage": "dense", "accuracy": round(base, 4),
                 "bits": dense_bits, "ratio": 1.0})
    log(f"{name} seed {seed}: dense {base:.4f} ({dense_bits // 8:,} B)")

    def record(cfg: str, stage: str, model: keras.Model, coded: bool) -> None:
        acc = accuracy(model, data)
        stats = layer_stats(model, CONFIGS[name][cfg])
        rest = mutate.model_size(model).bits - sum(s["coded_bits"] if "coded_bits" in s else s["raw_bits"]
                                                   for s in stats.values())
        raw = rest + sum(s["raw_bits"] for s in stats.values())
        rows.append({"model": name, "seed": seed, "config": cfg, "stage": stage, "accuracy": round(acc, 4),
                     "bits": raw, "ratio": round(dense_bits / raw, 2)})
        if coded:
            total = rest + sum(s["coded_bits"] for s in stats.values())
            rows.append({"model": name, "seed": seed, "config": cfg, "stage": stage + "+H",
                         "accuracy": round(acc, 4), "bits": total, "ratio": round(dense_bits / total, 2)})
        for layer, s in stats.items():
            layers.append({"model": name, "seed": seed, "config": cfg, "stage": stage, "layer": layer, **s})
        log(f"{name} seed {seed} {cfg} {stage}: {acc:.4f} ({acc - base:+.4f}) at {dense_bits / raw:.1f}x"
            + (f", {dense_bits / total:.1f}x coded" if coded else ""))

    for cfg in configs:
        plan = CONFIGS[name][cfg]
        # P: pruning blended in with the mask refreshed, spliced, fine-tuned
        keras.utils.set_random_seed(seed)
        model = build(name, data)
        model.set_weights(w0)
        mutate.compress(model, {k: ("pruning", {"sparsity": s}) for k, (s, _) in plan.items()},
                        schedule(data, p_blend), refresh=True)
        fit(compiled(model, TUNE_LR), data, p_blend, blend=True)
        fit(compiled(mutate.strip(model), TUNE_LR), data, p_tune)
        record(cfg, "P", model, coded=False)
        # P+Q staged: the pruned product re-compressed by the whole stack
        for k in plan:
            mutate.densify(model, k)
        mutate.compress(model, {k: stack(s, q) for k, (s, q) in plan.items()}, schedule(data, q_blend))
        fit(compiled(model, TUNE_LR), data, q_blend, blend=True)
        fit(compiled(mutate.strip(model), TUNE_LR), data, q_tune)
        record(cfg, "P+Q staged", model, coded=True)
        if cfg not in ONE_BLEND:
            continue
        # P+Q in one blend from the dense weights
        keras.utils.set_random_seed(seed)
        model = build(name, data)
        model.set_weights(w0)
        mutate.compress(model, {k: stack(s, q) for k, (s, q) in plan.items()}, schedule(data, p_blend))
        fit(compiled(model, TUNE_LR), data, p_blend, blend=True)
        fit(compiled(mutate.strip(model), TUNE_LR), data, p_tune + q_blend + q_tune)
        record(cfg, "P+Q one blend", model, coded=True)


def summarise(rows: list[dict[str, Any]], layers: list[dict[str, Any]]) -> str:
    """Markdown: per model, the DC-shaped per-layer table (mean over seeds) and the accuracy/size table."""
    md = []
    for name in dict.fromkeys(r["model"] for r in rows):
        dense = statistics.mean(r["accuracy"] for r in rows if r["model"] == name and r["stage"] == "dense")
        md += [f"### {name}: accuracy and size (mean over seeds {sorted({r['seed'] for r in rows if r['model'] == name})})",
               "", "| config | stage | test accuracy | vs dense (points) | per seed | compression |", "|---|---|---|---|---|---|",
               f"| dense | dense | {dense:.4f} | | "
               f"{' / '.join(str(r['accuracy']) for r in rows if r['model'] == name and r['stage'] == 'dense')} | 1x |"]
        keys = list(dict.fromkeys((r["config"], r["stage"]) for r in rows if r["model"] == name and r["stage"] != "dense"))
        for cfg, stage in keys:
            sel = [r for r in rows if r["model"] == name and r["config"] == cfg and r["stage"] == stage]
            acc = statistics.mean(r["accuracy"] for r in sel)
            md.append(f"| {cfg} | {stage} | {acc:.4f} | {100 * (acc - dense):+.2f} | "
                      f"{' / '.join(str(r['accuracy']) for r in sel)} | {statistics.mean(r['ratio'] for r in sel):.1f}x |")
        md.append("")
        for cfg in dict.fromkeys(r["config"] for r in layers if r["model"] == name):
            md += [f"**{name}, config `{cfg}`, P+Q staged** (per layer, mean over seeds; bits per kept weight)", "",
                   "| layer | weights | kept | weight bits | index bits | P | P+Q | P+Q+H |", "|---|---|---|---|---|---|---|---|"]
            for layer in dict.fromkeys(r["layer"] for r in layers if r["model"] == name and r["config"] == cfg):
                def mean(stage: str, key: str) -> float:
                    return statistics.mean(r[key] for r in layers if r["model"] == name and r["config"] == cfg
                                           and r["layer"] == layer and r["stage"] == stage)
                kept, w = mean("P+Q staged", "kept"), mean("P+Q staged", "weights")
                md.append(f"| {layer} | {w:,.0f} | {100 * kept / w:.1f}% | {mean('P+Q staged', 'code_bits') / kept:.2f} | "
                          f"{mean('P+Q staged', 'index_bits') / kept:.2f} | "
                          f"{mean('P', 'dense_bits') / mean('P', 'raw_bits'):.1f}x | "
                          f"{mean('P+Q staged', 'dense_bits') / mean('P+Q staged', 'raw_bits'):.1f}x | "
                          f"{mean('P+Q staged', 'dense_bits') / mean('P+Q staged', 'coded_bits'):.1f}x |")
            md.append("")
    return "\n".join(md)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        dense = statistics.mean(r["accuracy"] for r in rows if r["model"] == name and r["stage"] == "dense")
        ax.axhline(100 * dense, color="gray", ls="--", lw=1, label="dense")
        ax.axhspan(100 * dense - 0.3, 100 * dense + 0.3, color="gray", alpha=0.15)
        for stage, marker in (("P", "o"), ("P+Q staged", "s"), ("P+Q staged+H", "D"), ("P+Q one blend+H", "^")):
            sel = [r for r in rows if r["model"] == name and r["stage"] == stage]
            if sel:
                ax.scatter([r["ratio"] for r in sel], [100 * r["accuracy"] for r in sel], marker=marker, label=stage)
        ax.axvline(40, color="red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks([5, 10, 20, 40, 80])
        ax.set_xlabel("compression (dense bytes / stored bytes)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{name}: Deep Compression's stages as a mutate stack")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _number(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"], choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--configs", nargs="+", default=None, help="default: every config of the model")
    parser.add_argument("--merge", action="store_true",
                        help="keep the CSVs' rows of the models and configs not run now (dense rows are rerun)")
    parser.add_argument("--quick", action="store_true", help="digits (8x8: LeNet-300-100 only), short epochs")
    parser.add_argument("--long", action="store_true", help="LONG_EPOCHS; outputs deep_compression_long.*")
    parser.add_argument("--replot", action="store_true", help="rewrite the .md and .png from the CSVs; no training")
    args = parser.parse_args()
    tag = "_quick" if args.quick else "_long" if args.long else ""
    t0 = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - t0:7.0f}s] {line}", flush=True)

    rows: list[dict[str, Any]] = []
    layers: list[dict[str, Any]] = []
    if args.replot:
        for path, table in ((HERE / f"deep_compression{tag}.csv", rows), (HERE / f"deep_compression{tag}_layers.csv", layers)):
            with path.open() as f:
                table += [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
        args.models = []
    if args.merge:  # the rows of other models and configs, as the last run wrote them (the dense rows are rerun)
        def keep(r: dict[str, str]) -> bool:
            return r["model"] not in args.models or (
                args.configs is not None and r["config"] not in args.configs and r["config"] != "dense")

        for path, table in ((HERE / f"deep_compression{tag}.csv", rows), (HERE / f"deep_compression{tag}_layers.csv", layers)):
            if path.is_file():
                with path.open() as f:
                    table += [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f) if keep(r)]
    for name in args.models:
        if args.quick and name != "lenet300":
            continue
        data = digits() if args.quick else fashion_mnist(flatten=name == "lenet300")
        for seed in args.seeds:
            run_seed(name, data, seed, args.configs or list(CONFIGS[name]), QUICK_EPOCHS if args.quick else (LONG_EPOCHS if args.long else EPOCHS)[name], rows, layers, log)
            for path, table in ((HERE / f"deep_compression{tag}.csv", rows),
                                (HERE / f"deep_compression{tag}_layers.csv", layers)):
                with path.open("w", newline="") as f:
                    fields = list(dict.fromkeys(k for r in table for k in r))
                    w = csv.DictWriter(f, fieldnames=fields)
                    w.writeheader()
                    w.writerows(table)
    md = summarise(rows, layers)
    (HERE / f"deep_compression{tag}.md").write_text(md + "\n")
    plot(rows, HERE / f"deep_compression{tag}.png")
    print(md)
    log(f"wrote experiments/deep_compression{tag}.csv, _layers.csv, .md, .png")


if __name__ == "__main__":
    main()
