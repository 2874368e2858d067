"""PNG plots of fronts (matplotlib, headless)."""

from __future__ import annotations

import io
from typing import Any


def pareto_png(runs: list[Any]) -> bytes:
    """All points in grey, each run's front as a staircase, the dense model and the budget marked.

    Args:
        runs: `mutate.report.Run` objects (one or several to compare).

    Returns:
        The PNG file's bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"]
    for i, run in enumerate(runs):
        pts = run.points()
        label = run.dir.name
        ax.scatter([p.size for p in pts], [p.metric for p in pts], s=12, color="0.7",
                   label="all points" if i == 0 else None, zorder=1)
        fr = run.pareto_front()
        if fr:
            xs = [p.size for p in fr]
            ys = [p.metric for p in fr]
            ax.step(xs, ys, where="post", color=colours[i % len(colours)], zorder=2)
            ax.scatter(xs, ys, s=28, color=colours[i % len(colours)], zorder=3,
                       label=f"front: {label} (HV {run.hypervolume():.3f})")
    first = runs[0]
    if first.dense_bytes:
        ax.axvline(first.dense_bytes, color="k", linestyle=":", linewidth=1, label="dense model")
    if first.budget_bytes():
        ax.axvline(first.budget_bytes(), color="tab:red", linestyle="--", linewidth=1, label="size budget")
    ax.set_xscale("log")
    ax.set_xlabel("stored size (bytes, log scale)")
    ax.set_ylabel("test perplexity" if first.lm else "test accuracy")
    ax.set_title("mutate: size against " + ("perplexity" if first.lm else "accuracy"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
