"""Plots of fronts: a PNG (matplotlib, headless) and an offline HTML page (inline SVG, no library)."""

from __future__ import annotations

import io
import shlex
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
        label = run.label
        ax.scatter([p.size for p in pts], [p.metric for p in pts], s=12, color="0.7",
                   label="all points" if i == 0 else None, zorder=1)
        fr = run.pareto_front()
        if fr:
            xs = [p.size for p in fr]
            ys = [p.metric for p in fr]
            ax.step(xs, ys, where="post", color=colours[i % len(colours)], zorder=2)
            ax.scatter(xs, ys, s=28, color=colours[i % len(colours)], zorder=3,
                       label=f"front: {label} (HV {run.hypervolume():.3f})")
    first = reference(runs)
    for kind, value, label in marks(runs):
        style = dict(color="k", linestyle=":") if kind == "dense" else dict(color="tab:red", linestyle="--")
        ax.axvline(value, linewidth=1, label=label, **style)
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


def reference(runs: list) -> object:
    """The run that names a comparison's metric: the first with points (a
    run with none yet knows neither its metric nor its dense model's size)."""
    return next((r for r in runs if r.points()), runs[0])


def marks(runs: list) -> list[tuple[str, int, str]]:
    """The vertical lines of a plot: ("dense" or "budget", bytes, label), one per distinct value over the runs
    with points (compared runs of different budgets, or of different models, each get theirs; the label names
    the runs when they differ)."""
    out = []
    for kind, name in (("dense", "dense model"), ("budget", "size budget")):
        values: dict[int, list[str]] = {}
        for run in runs:
            value = (run.dense_bytes if kind == "dense" else run.budget_bytes()) if run.points() else None
            if value:
                values.setdefault(int(value), []).append(run.label)
        for value, labels in values.items():
            out.append((kind, value, name if len(values) == 1 else f"{name}: {', '.join(labels)}"))
    return out


COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
"""Each run's front colour (matplotlib's tab10, as in the PNG)."""


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis over [lo, hi]: powers of ten, with 2x and 5x when it spans few decades."""
    import math

    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    steps = (1, 2, 5) if last - first <= 3 else (1,)
    return [m * 10.0 ** e for e in range(first, last + 1) for m in steps if lo <= m * 10.0 ** e <= hi]


def _linear_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """About ``count`` round tick values over [lo, hi]."""
    import math

    raw = (hi - lo) / max(1, count - 1)
    unit = 10.0 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * unit for m in (1, 2, 2.5, 5, 10) if m * unit >= raw) if raw > 0 else 1.0
    return [k * step for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]


def _size(value: float) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:g} {unit}"
    return f"{value:g} B"


def pareto_html(runs: list[Any]) -> str:
    """A self-contained interactive page (inline SVG and a few lines of script; no library, no network):
    every point, each run's front as a staircase, the dense model and the budget on a log-scale size axis.
    Hovering a point shows its genome, size, validation and test metric and its `mutate export` command; a
    table under the plot lists each front point with that command.

    Args:
        runs: `mutate.results.report.Run` objects.

    Returns:
        The HTML text (tens of kilobytes: plotly's inlined page, used before, was 4.6 MiB a run).
    """
    import math
    from html import escape

    from mutate.results.pareto import front

    first = reference(runs)
    metric = "perplexity" if first.lm else "accuracy"
    width, height, left, right, top, bottom = 900, 520, 80, 30, 30, 60
    opened = []
    for run in runs:
        pts = run.points()
        opened.append((run, pts, front(pts, higher_is_better=not run.lm)))
    sizes = [p.size for _, pts, _ in opened for p in pts if p.size > 0]
    values = [p.metric for _, pts, _ in opened for p in pts if math.isfinite(p.metric)]
    lines = marks(runs)
    at = [value for _, value, _ in lines]
    lo, hi = min(sizes + at, default=1) / 1.25, max(sizes + at, default=10) * 1.25
    vlo, vhi = min(values, default=0.0), max(values, default=1.0)
    pad = max(0.02 * (vhi - vlo), 1e-3)
    vlo, vhi = vlo - pad, vhi + pad

    def x(size: float) -> float:
        return left + (math.log10(max(size, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (
            width - left - right)

    def y(value: float) -> float:
        return top + (vhi - value) / (vhi - vlo) * (height - top - bottom)

    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="size against {metric}">',
           f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
           'fill="white" stroke="#bbb"/>']
    for t in _log_ticks(lo, hi):
        svg.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top}" y2="{height - bottom}" class="grid"/>'
                   f'<text x="{x(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{_size(t)}</text>')
    for t in _linear_ticks(vlo, vhi):
        svg.append(f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    svg.append(f'<text x="{(left + width - right) / 2}" y="{height - 18}" text-anchor="middle">stored size '
               '(bytes, log scale)</text>'
               f'<text transform="translate(18 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f'validation {metric} (test in the hover text)</text>')
    for k, (css, value, label) in enumerate(lines):  # labels one under the other: close lines stay readable
        svg.append(f'<line x1="{x(value):.1f}" x2="{x(value):.1f}" y1="{top}" y2="{height - bottom}" '
                   f'class="{css}"/><text x="{x(value) + 4:.1f}" y="{top + 14 * (k + 1)}" class="{css}">'
                   f'{escape(label)}</text>')
    legend, rows = [], []
    for i, (run, pts, fr) in enumerate(opened):
        colour = COLOURS[i % len(COLOURS)]
        index = {id(p): k for k, p in enumerate(fr)}

        def tip(p: Any) -> str:
            test = "not evaluated" if p.test is None else f"{p.test:.4f}"
            cmd = (f"mutate export {shlex.quote(str(run.dir))} --point {index[id(p)]} --out model.keras" if id(p) in index
                   else "not on the front")
            return escape(f"{run.label}: {p.genome or 'dense'}\n{p.size:,} bytes ({p.ratio:.4f} of dense)\n"
                          f"validation {metric} {p.metric:.4f}, test {test}\ntrial {p.trial}, step {p.step}\n{cmd}",
                          quote=True)

        finite = [p for p in pts if math.isfinite(p.metric)]
        svg += [f'<circle class="point all" cx="{x(p.size):.1f}" cy="{y(p.metric):.1f}" r="3.5" '
                f'data-tip="{tip(p)}"/>' for p in finite]
        if fr:
            path = [f"M{x(fr[0].size):.1f},{y(fr[0].metric):.1f}"]
            for a, b in zip(fr, fr[1:]):
                path.append(f"H{x(b.size):.1f}V{y(b.metric):.1f}")  # a staircase: constant until the next point
            svg.append(f'<path d="{"".join(path)}" fill="none" stroke="{colour}" stroke-width="2"/>')
            svg += [f'<circle class="point front" cx="{x(p.size):.1f}" cy="{y(p.metric):.1f}" r="5.5" '
                    f'fill="{colour}" data-tip="{tip(p)}"/>' for p in fr]
        legend.append(f'<li><span style="background:{colour}"></span>{escape(run.label)}: front of '
                      f'{len(fr)} point(s) from {len(pts)} reported (hypervolume {run.hypervolume():.3f})</li>')
        for k, p in enumerate(fr):
            test = "-" if p.test is None else f"{p.test:.4f}"
            rows.append(f"<tr><td>{escape(run.label)}</td><td>{k}</td><td>{p.size:,}</td><td>{p.ratio:.4f}</td>"
                        f"<td>{p.metric:.4f}</td><td>{test}</td><td>{escape(p.genome or 'dense')}</td>"
                        f"<td><code>mutate export {escape(shlex.quote(str(run.dir)))} --point {k} --out model.keras"
                        "</code></td></tr>")
    svg.append("</svg>")
    title = f"mutate: size against {metric}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 20px; color: #222; }}
svg text {{ font-size: 12px; fill: #444; }}
.grid {{ stroke: #eee; }} line.dense {{ stroke: #000; stroke-dasharray: 2 3; }}
line.budget {{ stroke: #d62728; stroke-dasharray: 6 4; }} svg text.budget {{ fill: #d62728; }}
.point {{ cursor: pointer; }} .all {{ fill: #c8c8c8; }} .front {{ stroke: white; }}
.point:hover {{ stroke: #000; stroke-width: 2; }}
#tip {{ position: fixed; display: none; white-space: pre-line; background: #fffff0; border: 1px solid #999;
  padding: 6px 8px; font-size: 12px; pointer-events: none; max-width: 640px; }}
ul.legend {{ list-style: none; padding: 0; }} ul.legend span {{ display: inline-block; width: 12px; height: 12px;
  margin-right: 6px; vertical-align: middle; }}
table {{ border-collapse: collapse; margin-top: 12px; }} td, th {{ border: 1px solid #ddd; padding: 3px 6px;
  text-align: left; font-size: 12px; }}
</style></head><body>
<h2>{escape(title)}</h2>
{"".join(svg)}
<ul class="legend">{"".join(legend)}<li><span style="background:#c8c8c8"></span>every reported point</li></ul>
<table><tr><th>run</th><th>point</th><th>bytes</th><th>of dense</th><th>validation {metric}</th>
<th>test {metric}</th><th>genome</th><th>export</th></tr>{"".join(rows)}</table>
<div id="tip"></div>
<script>
const tip = document.getElementById("tip");
for (const c of document.querySelectorAll(".point")) {{
  c.addEventListener("mouseenter", e => {{ tip.textContent = c.dataset.tip; tip.style.display = "block"; }});
  c.addEventListener("mousemove", e => {{ tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 14) + "px"; }});
  c.addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
}}
</script>
</body></html>
"""
