"""The README's headline: LeNet-300-100 on Fashion-MNIST, every method and anchor, and the search's front.

    .venv/bin/python experiments/headline.py      # seconds: reads the studies' CSVs, runs nothing

Reads ``method_comparison_lenet.csv`` (method_comparison.py, with the TFMOT anchors) and, when present,
``search_study_fashion_half_fronts.csv`` (search_study.py on fashion_mlp.yaml, the same 784-300-100-10 model
and data: the PBT and greedy fronts of seed 0, chosen on validation, plotted with their test accuracy),
writes ``headline.png`` and prints the markdown table the README shows: per method, the most compressed row
within 0.3 and within 1 point of the dense model's accuracy, and the most accurate row at 10x or more.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from comparison_plot import Point, mean_rows, most_accurate, most_compressed, plot_comparison  # noqa: E402


def best(points: list[Point], floor: float) -> str:
    """The largest compression among ``points`` with accuracy >= floor, as a table cell."""
    p = most_compressed(points, floor)
    return "-" if p is None else f"{p[0]:.1f}x ({p[1]:.4f}{', ' + p[2] if p[2] else ''})"


def at_least(points: list[Point], ratio: float) -> str:
    """The most accurate of ``points`` compressed ``ratio`` times or more, as a table cell."""
    p = most_accurate(points, ratio)
    return "-" if p is None else f"{p[1]:.4f} ({p[0]:.1f}x{', ' + p[2] if p[2] else ''})"


def main() -> None:
    rows = list(csv.DictReader((HERE / "method_comparison_lenet.csv").open()))
    fronts: dict[str, list[tuple[float, float]]] = {}
    new = HERE / "search_study_fashion_half_fronts.csv"
    if new.exists():  # validation-chosen fronts, plotted with their test accuracy (search_study.py)
        for r in csv.DictReader(new.open()):
            if r["space"] == "fashion_mlp" and r["strategy"] in ("pbt", "greedy") and r["seed"] == "0" \
                    and r["test_accuracy"]:
                fronts.setdefault(f"search front ({r['strategy']}, seed 0, fashion_mlp.yaml, 4 x 3000 steps; "
                                  "chosen on validation, test accuracy)", []).append(
                    (1.0 / float(r["ratio"]), float(r["test_accuracy"])))
    plot_comparison(rows, HERE / "headline.png", title="LeNet-300-100 on Fashion-MNIST: accuracy against compression",
                    fronts=fronts)
    means = mean_rows(rows)
    dense = means["dense"][0][1]
    print(f"dense accuracy {dense:.4f}\n")
    print("| method | most compressed within 0.3 pts | within 1 pt | most accurate at >= 10x | at >= 30x |")
    print("|---|---|---|---|---|")
    for method, points in means.items():
        if method.startswith("dense"):
            continue
        print(f"| {method} | {best(points, dense - 0.003)} | {best(points, dense - 0.01)} | "
              f"{at_least(points, 10)} | {at_least(points, 30)} |")
    for label, front in fronts.items():
        pts = [(ratio, acc, "") for ratio, acc in front]
        print(f"| {label} | {best(pts, dense - 0.003)} | {best(pts, dense - 0.01)} | {at_least(pts, 10)} | "
              f"{at_least(pts, 30)} |")
    print("\nwrote headline.png")


if __name__ == "__main__":
    import argparse

    # no options: --help prints what the script does instead of running it
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
