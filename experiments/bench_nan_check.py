"""What the per-report NaN/Inf weight check costs, against the report it guards (a benchmark, not a test).

    .venv/bin/python experiments/bench_nan_check.py

For the digits MLP (search_spaces/digits_mlp.yaml) and LeNet-300-100 on Fashion-MNIST-shaped inputs (the
fashion_mlp.yaml model), times one report's training (``training.report_every`` steps, the anchor) and the
check (`mutate.search.trial.nonfinite_weights`: one reduction per float variable, then one transfer), on a dense
model and with every mutable layer mid-blend (more variables). Prints medians and the check's share of a
report. Writes ``bench_nan_check.txt``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from mutate.search import space as spaces  # noqa: E402
from mutate.search.genome import Mutation  # noqa: E402
from mutate.search.trial import TrialRunner, nonfinite_weights  # noqa: E402


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(name: str, yaml: str, overrides: list[str]) -> str:
    space = spaces.load(ROOT / "search_spaces" / yaml, overrides)
    r = TrialRunner(space, seed=0)
    every = space.training["report_every"]
    r.train(every)  # warm the graphs
    rows = []
    for label in ("dense", "blending"):
        if label == "blending":
            r.apply(tuple(Mutation(layer, "low_rank", {"rank": 8}) for layer in
                          [ly.name for ly in r.model.layers if ly.name.startswith("dense_")]))
            r.train(2)
        report = median_s(lambda: r.train(every), 3)
        check = median_s(lambda: nonfinite_weights(r.model), 20)
        nvars = len(r.model.weights)
        rows.append(f"{name:<16}{label:<10}{nvars:>6}{every:>8}{report * 1e3:>12.1f}{check * 1e3:>10.2f}"
                    f"{100 * check / report:>9.2f}%")
    return "\n".join(rows)


def main() -> None:
    head = f"{'model':<16}{'state':<10}{'vars':>6}{'steps':>8}{'report ms':>12}{'check ms':>10}{'share':>10}"
    out = [head,
           # the longest window digits_mlp.yaml allows (steps 1200 - warm-up 300; the space check refuses 1000,
           # which the numbers in bench_nan_check.txt were measured with before that check existed)
           bench("digits_mlp", "digits_mlp.yaml", ["mutations.window=900"]),
           bench("lenet-300-100", "fashion_mlp.yaml", ["mutations.window=1000"])]
    text = "\n".join(out)
    print(text)
    (HERE / "bench_nan_check.txt").write_text("# .venv/bin/python experiments/bench_nan_check.py\n" + text + "\n")


if __name__ == "__main__":
    import argparse

    # no options: --help prints what the script does instead of running it
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
