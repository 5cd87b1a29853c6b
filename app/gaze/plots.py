"""Server-drawn SVG bar charts of the gaze results: per method, one bar per group with its 95 % interval,
and the inter-observer ceiling of each group as a dashed line (the page's CSP allows no inline script or
style, and SVG attributes need neither)."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

COLOURS = ["#1f5f8b", "#c2571a", "#3c8d2f", "#7b3fa0", "#8a6d00", "#555555"]


def _value(entry: dict[str, Any], key: str) -> float | None:
    v = entry.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def bars_svg(result: dict[str, Any], *, metric: str, width: int = 720) -> Markup:
    groups = ["all", *result["groups"]]
    methods = list(result["methods"].items())
    label = next((m["label"] for m in result["metrics"] if m["id"] == metric), metric)
    values: list[float] = []
    for _, entry in methods:
        for g in groups:
            e = entry["groups"].get(g, {}).get("metrics", {}).get(metric, {})
            values += [v for v in (_value(e, "mean"), _value(e, "low"), _value(e, "high")) if v is not None]
    for g in groups:
        e = result["ceiling"].get(g, {}).get("metrics", {}).get(metric, {})
        values += [v for v in (_value(e, "mean"),) if v is not None]
    if not methods or not values:
        return Markup('<p class="empty">No maps and gaze on the same cases yet.</p>')
    low, high = min(0.0, min(values)), max(values)
    span = (high - low) or 1.0
    row_h, bar_h, left, plot_w = 18 * len(groups) + 14, 14, 170, width - 230
    height = row_h * len(methods) + 40

    def x(v: float) -> float:
        return left + (v - low) / span * plot_w

    parts = [f'<svg class="gaze-plot" role="img" viewBox="0 0 {width} {height}" width="100%" '
             f'aria-label="{escape(label)} per method and group, with 95% intervals and the ceiling">',
             f'<title>{escape(label)}</title>',
             f'<line x1="{x(0):.1f}" y1="10" x2="{x(0):.1f}" y2="{height - 25}" stroke="#888" stroke-width="1"/>']
    for i, (_, entry) in enumerate(methods):
        top = 14 + i * row_h
        parts.append(f'<text x="{left - 8}" y="{top + row_h / 2:.1f}" text-anchor="end" font-size="12">'
                     f'{escape(entry["label"])}</text>')
        for j, g in enumerate(groups):
            e = entry["groups"].get(g, {}).get("metrics", {}).get(metric, {})
            mean = _value(e, "mean")
            y = top + j * 18
            if mean is None:
                continue
            colour = COLOURS[j % len(COLOURS)]
            x0, x1 = sorted((x(0), x(mean)))
            parts.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1):.1f}" height="{bar_h}" '
                         f'fill="{colour}"><title>{escape(g)}: {mean:.3f} (n={e.get("n")})</title></rect>')
            lo, hi = _value(e, "low"), _value(e, "high")
            if lo is not None and hi is not None:
                parts.append(f'<line x1="{x(lo):.1f}" y1="{y + bar_h / 2}" x2="{x(hi):.1f}" y2="{y + bar_h / 2}" '
                             'stroke="#000" stroke-width="1.5"/>')
            ceiling = _value(result["ceiling"].get(g, {}).get("metrics", {}).get(metric, {}), "mean")
            if ceiling is not None:
                parts.append(f'<line x1="{x(ceiling):.1f}" y1="{y - 2}" x2="{x(ceiling):.1f}" y2="{y + bar_h + 2}" '
                             f'stroke="{colour}" stroke-width="2" stroke-dasharray="3 2"><title>ceiling, {escape(g)}: '
                             f'{ceiling:.3f}</title></line>')
    legend_y = height - 8
    for j, g in enumerate(groups):
        parts.append(f'<rect x="{left + j * 150}" y="{legend_y - 10}" width="10" height="10" '
                     f'fill="{COLOURS[j % len(COLOURS)]}"/><text x="{left + j * 150 + 14}" y="{legend_y}" '
                     f'font-size="11">{escape(g)}</text>')
    parts.append(f'<text x="{width - 8}" y="{legend_y}" text-anchor="end" font-size="11">dashed: ceiling · '
                 f'{low:.2f} to {high:.2f}</text></svg>')
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()
