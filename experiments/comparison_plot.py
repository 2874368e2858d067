"""The accuracy-against-compression plot shared by `method_comparison.py` and `headline.py` (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ANCHORS = {"posthoc_svd": ("SVD, no fine-tuning", "--", "x"), "tfmot_prune": ("TFMOT pruning", "", "^"),
           "tfmot_cluster": ("TFMOT clustering", "", "s")}
"""Anchor rows drawn in grey: label, line style ("" for markers only), marker."""


Point = tuple[float, float, str]
"""(compression ratio, accuracy, level) of one method's row, averaged over seeds."""


def mean_rows(rows: Sequence[dict[str, Any]]) -> dict[str, list[Point]]:
    """Per method, (ratio, accuracy, level) averaged over seeds, sorted by ratio."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r["method"]), str(r["level"])), []).append(r)
    out: dict[str, list[Point]] = {}
    for (method, level), g in groups.items():
        out.setdefault(method, []).append((float(np.mean([float(r["ratio"]) for r in g])),
                                           float(np.mean([float(r["accuracy"]) for r in g])), level))
    return {m: sorted(v) for m, v in out.items()}


def most_compressed(points: Sequence[Point], floor: float) -> Point | None:
    """The point with the largest ratio among those with accuracy >= ``floor``; None when there is none."""
    return max((p for p in points if p[1] >= floor), default=None)


def most_accurate(points: Sequence[Point], ratio: float) -> Point | None:
    """The most accurate point compressed ``ratio`` times or more; None when there is none."""
    return max((p for p in points if p[0] >= ratio), key=lambda p: p[1], default=None)


def plot_comparison(rows: Sequence[dict[str, Any]], path: Path, *, title: str,
                    fronts: dict[str, list[tuple[float, float]]] | None = None) -> Path:
    """Accuracy (y) against the compression ratio dense bits / stored bits (log x), one line per method.

    Args:
        rows: dicts with ``method``, ``level``, ``ratio`` and ``accuracy`` (several seeds are averaged).
        path: the PNG to write.
        title: the plot title.
        fronts: optional search fronts, label -> [(ratio, accuracy)], drawn as step lines.

    Returns:
        ``path``.
    """
    means = mean_rows(rows)
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=120)
    dense = means.pop("dense", None)
    if dense:
        acc = dense[0][1]
        ax.axhline(acc, color="black", lw=1, label=f"dense ({acc:.4f})")
        ax.plot([10, 30], [acc - 0.003, acc - 0.01], "*", color="gold", ms=14, mec="black",
                label="targets: 10x at -0.3 pts, 30x at -1 pt")
    tf_dense = means.pop("dense_tfkeras", None)
    if tf_dense:
        ax.axhline(tf_dense[0][1], color="grey", lw=1, ls=":", label=f"dense, tf_keras ({tf_dense[0][1]:.4f})")
    for method, points in means.items():
        x, y = [p[0] for p in points], [p[1] for p in points]
        if method in ANCHORS:
            label, style, marker = ANCHORS[method]
            ax.plot(x, y, ls=style or "none", marker=marker, color="grey", ms=7, label=label)
        else:
            ax.plot(x, y, marker="o", ms=4, label=method)
    for label, front in (fronts or {}).items():
        front = sorted(front)
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", lw=2, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("compression: dense bits / stored bits (log)")
    ax.set_ylabel("test accuracy")
    if dense:
        ax.set_ylim(max(0.0, dense[0][1] - 0.12), min(1.0, dense[0][1] + 0.03))
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
