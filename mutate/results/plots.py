"""PNG plots of fronts (matplotlib, headless)."""

from __future__ import annotations

import io
from typing import Any


def pareto_png(runs: list[Any]) -> bytes:
    """All points in grey, each run's validation front as a staircase, the dense model and the budget marked.

    Args:
        runs: `mutate.results.report.Run` objects (one or several to compare).

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
    ax.set_ylabel("validation perplexity" if first.lm else "validation accuracy")
    ax.set_title("mutate: size against " + ("perplexity" if first.lm else "accuracy"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def pareto_html(runs: list[Any]) -> str:
    """A self-contained interactive page (plotly.js inlined, no CDN): every point, each run's front, the
    dense model and the budget. Hovering a point shows its genome, size, metric and its export command.

    Args:
        runs: `mutate.results.report.Run` objects.

    Returns:
        The HTML text.
    """
    import plotly.graph_objects as go

    from mutate.results.pareto import front

    first = runs[0]
    metric = "perplexity" if first.lm else "accuracy"
    fig = go.Figure()
    for run in runs:
        pts = run.points()
        fr = front(pts, higher_is_better=not run.lm)
        front_index = {id(p): i for i, p in enumerate(fr)}

        def hover(p: Any) -> str:
            cmd = (f"mutate export {run.dir} --point {front_index[id(p)]} --out model.keras"
                   if id(p) in front_index else "not on the front")
            test = "not evaluated" if p.test is None else f"{p.test:.4f}"
            return (f"{p.genome or 'dense'}<br>{p.size:,} bytes ({p.ratio:.4f} of dense)<br>validation {metric} "
                    f"{p.metric:.4f}, test {test}<br>trial {p.trial}, step {p.step}<br>{cmd}")

        fig.add_trace(go.Scatter(x=[p.size for p in pts], y=[p.metric for p in pts], mode="markers",
                                 name=f"{run.dir.name}: all points", marker={"color": "lightgrey", "size": 6},
                                 hovertext=[hover(p) for p in pts], hoverinfo="text"))
        fig.add_trace(go.Scatter(x=[p.size for p in fr], y=[p.metric for p in fr], mode="lines+markers",
                                 line={"shape": "hv"}, marker={"size": 9},
                                 name=f"{run.dir.name}: front (HV {run.hypervolume():.3f})",
                                 hovertext=[hover(p) for p in fr], hoverinfo="text"))
    if first.dense_bytes:
        fig.add_vline(x=first.dense_bytes, line_dash="dot", annotation_text="dense model")
    if first.budget_bytes():
        fig.add_vline(x=first.budget_bytes(), line_dash="dash", line_color="red", annotation_text="budget")
    fig.update_layout(title=f"mutate: size against {metric}", xaxis={"type": "log", "title": "stored size (bytes)"},
                      yaxis={"title": f"validation {metric} (test in the hover text)"}, template="plotly_white", hovermode="closest")
    return fig.to_html(include_plotlyjs=True, full_html=True)
