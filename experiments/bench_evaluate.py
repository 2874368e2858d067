"""What one validation evaluation costs: Keras' ``model.evaluate`` against `mutate.search.trial.evaluate_arrays`
(the same loss and accuracy, batch by batch through ``test_on_batch``; on TensorFlow, where it is used), as every report, every
sensitivity-table entry and every front point's test evaluation runs it (a benchmark, not a test).

    .venv/bin/python experiments/bench_evaluate.py

For digits_mlp.yaml (135 validation rows, one batch) and fashion_mlp.yaml (6,000 rows, 12 batches of 512):
a trial's runner trains 50 steps, then each way evaluates its validation split 10 times (after one untimed
call each, which traces); medians. Also prints the largest difference between the two results. Output
in ``bench_evaluate.txt``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from mutate.search import space as spaces  # noqa: E402
from mutate.search.trial import EVAL_BATCH, TrialRunner, evaluate_arrays  # noqa: E402


def median_s(fn, n: int = 10) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    lines = []
    for name in ("digits_mlp", "fashion_mlp"):
        space = spaces.load(ROOT / "search_spaces" / f"{name}.yaml")
        r = TrialRunner(space, seed=0)
        r.train(50)
        x, y = r.x_val, r.y_val
        keras_s = median_s(lambda: r.model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True))
        ours_s = median_s(lambda: evaluate_arrays(r.model, x, y, EVAL_BATCH))
        a = r.model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0, return_dict=True)
        b = evaluate_arrays(r.model, x, y, EVAL_BATCH)
        diff = max(abs(float(a[k]) - b[k]) for k in a)
        lines.append(f"{name}: {len(x):,} validation rows: model.evaluate {keras_s * 1000:.1f} ms, evaluate_arrays "
                     f"{ours_s * 1000:.1f} ms ({keras_s / ours_s:.1f}x faster); largest difference {diff:.1e}")
        print(lines[-1], flush=True)
    (Path(__file__).with_suffix(".txt")).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
