"""Server-drawn SVG bar charts of the gaze results: per method, one bar per group with its 95 % bootstrap interval
(whiskers with caps, haloed so they show on a bar and beside it), the inter-observer ceiling of each group as a
dashed tick, an x axis with ticks and values, the chance line where a metric has one (AUC 0.5), and a legend in
rows of its own. A bar resting on few cases or fixations is drawn hatched and says so (issue 24.4: one participant
with 9 fixations was drawn as confidently as a study). The page's CSP allows no inline script or style, and SVG
attributes need neither."""

from __future__ import annotations

import math
from typing import Any

from markupsafe import Markup, escape

COLOURS = ["#1f5f8b", "#c2571a", "#3c8d2f", "#7b3fa0", "#8a6d00", "#555555"]
CHANCE = {"auc_judd": 0.5, "auc_borji": 0.5, "auc_shuffled": 0.5}  # a map no better than guessing
#: Below these a bar is marked as a small sample: an interval over fewer cases, or a density from fewer
#: fixations, says little however it is drawn.
SMALL_CASES = 5
SMALL_FIXATIONS = 100
_CHAR_W = 6.6  # px per character at font-size 11, to lay the legend out without overlaps


def _value(entry: dict[str, Any], key: str) -> float | None:
    v = entry.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5 or 5 × a power of ten apart)."""
    span = (high - low) or 1.0
    raw = span / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(k * step, 10) for k in range(first, max(last, first + 1) + 1)]


def group_fixations(result: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {"all": 0}
    for person in (result.get("participants") or {}).values():
        counts[person["group"]] = counts.get(person["group"], 0) + int(person["fixations"])
        counts["all"] += int(person["fixations"])
    return counts


def bars_svg(result: dict[str, Any], *, metric: str, width: int = 720,
             group_labels: dict[str, str] | None = None) -> Markup:
    groups = ["all", *result["groups"]]
    names = {"all": "everyone", **(group_labels or {})}
    methods = list(result["methods"].items())
    label = next((m["label"] for m in result["metrics"] if m["id"] == metric), metric)
    chance = CHANCE.get(metric)
    fixations = group_fixations(result)
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
    if chance is not None:
        values.append(chance)
    ticks = nice_ticks(min(0.0, min(values)), max(values))
    low, high = ticks[0], ticks[-1]
    span = (high - low) or 1.0
    row_h, bar_h, left, right = 18 * len(groups) + 14, 14, 170, 24
    plot_w = width - left - right
    plot_bottom = 14 + row_h * len(methods)

    def x(v: float) -> float:
        return left + (v - low) / span * plot_w

    # legend items: colour swatch + group name (hatched note for small samples), laid out in rows that fit
    items = [(COLOURS[j % len(COLOURS)], f"{names.get(g, g)} ({fixations.get(g, 0)} fixations)")
             for j, g in enumerate(groups)]
    items.append(("ceiling", "dashed tick: ceiling (participants predicting each other)"))
    if chance is not None:
        items.append(("chance", f"grey line: chance ({chance:g})"))
    items.append(("whisker", "whiskers: 95% bootstrap interval over cases"))
    items.append(("small", f"hatched: small sample (< {SMALL_CASES} cases or < {SMALL_FIXATIONS} fixations)"))
    legend_rows: list[list[tuple[str, str, float]]] = [[]]
    used = 0.0
    for kind, text in items:
        w = 18 + len(text) * _CHAR_W + 16
        if used + w > width - 16 and legend_rows[-1]:
            legend_rows.append([])
            used = 0.0
        legend_rows[-1].append((kind, text, 8 + used))
        used += w
    axis_h = 34
    height = plot_bottom + axis_h + 18 * len(legend_rows) + 6

    parts = [f'<svg class="gaze-plot" role="img" viewBox="0 0 {width} {height}" width="100%" '
             f'aria-label="{escape(label)} per method and group, with 95% intervals, the ceiling'
             f'{" and chance" if chance is not None else ""}">',
             f'<title>{escape(label)}</title>',
             f'<defs><pattern id="small-{escape(metric)}" width="6" height="6" patternUnits="userSpaceOnUse" '
             'patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/>'
             '<line x1="0" y1="0" x2="0" y2="6" stroke="#777" stroke-width="3"/></pattern></defs>']
    # grid and axis: ticks with values, so a bar's length can be read
    parts.append('<g class="axis" data-axis="x">')
    for t in ticks:
        parts.append(f'<line x1="{x(t):.1f}" y1="10" x2="{x(t):.1f}" y2="{plot_bottom}" stroke="#e3e6ec"/>'
                     f'<line x1="{x(t):.1f}" y1="{plot_bottom}" x2="{x(t):.1f}" y2="{plot_bottom + 5}" stroke="#444"/>'
                     f'<text class="tick" x="{x(t):.1f}" y="{plot_bottom + 17}" text-anchor="middle" '
                     f'font-size="11">{t:g}</text>')
    parts.append(f'<line x1="{left}" y1="{plot_bottom}" x2="{left + plot_w}" y2="{plot_bottom}" stroke="#444"/>'
                 f'<text x="{left + plot_w / 2:.1f}" y="{plot_bottom + 31}" text-anchor="middle" font-size="11">'
                 f'{escape(label)}</text></g>')
    parts.append(f'<line x1="{x(0):.1f}" y1="10" x2="{x(0):.1f}" y2="{plot_bottom}" stroke="#888" stroke-width="1"/>')
    if chance is not None:
        parts.append(f'<line class="chance" x1="{x(chance):.1f}" y1="8" x2="{x(chance):.1f}" y2="{plot_bottom}" '
                     f'stroke="#666" stroke-width="1.5" stroke-dasharray="6 3"><title>chance: {chance:g}</title></line>'
                     f'<text x="{x(chance) + 3:.1f}" y="9" font-size="10" fill="#444">chance {chance:g}</text>')
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
            n = int(e.get("n") or 0)
            small = n < SMALL_CASES or fixations.get(g, 0) < SMALL_FIXATIONS
            x0, x1 = sorted((x(0), x(mean)))
            fill = f"url(#small-{escape(metric)})" if small else colour
            note = f" — small sample: {n} case(s), {fixations.get(g, 0)} fixations" if small else ""
            parts.append(f'<rect class="bar{" small-sample" if small else ""}" x="{x0:.1f}" y="{y}" '
                         f'width="{max(x1 - x0, 1):.1f}" height="{bar_h}" fill="{fill}" stroke="{colour}" '
                         f'stroke-width="1.5"><title>{escape(names.get(g, g))}: {mean:.3f} (n = {n} cases)'
                         f'{escape(note)}</title></rect>')
            lo, hi = _value(e, "low"), _value(e, "high")
            mid = y + bar_h / 2
            if lo is not None and hi is not None:
                whisker = (f'M{x(lo):.1f},{mid} H{x(hi):.1f} M{x(lo):.1f},{mid - 5} V{mid + 5} '
                           f'M{x(hi):.1f},{mid - 5} V{mid + 5}')
                parts.append(f'<path class="ci-halo" d="{whisker}" stroke="#fff" stroke-width="4" fill="none"/>'
                             f'<path class="ci" d="{whisker}" stroke="#111" stroke-width="1.5" fill="none">'
                             f'<title>95% interval {lo:.3f} to {hi:.3f}</title></path>')
            elif small:
                parts.append(f'<text class="no-ci" x="{x1 + 4:.1f}" y="{mid + 4:.1f}" font-size="10" fill="#444">'
                             f'no interval: {n} case(s)</text>')
            ceiling = _value(result["ceiling"].get(g, {}).get("metrics", {}).get(metric, {}), "mean")
            if ceiling is not None:
                parts.append(f'<line x1="{x(ceiling):.1f}" y1="{y - 2}" x2="{x(ceiling):.1f}" y2="{y + bar_h + 2}" '
                             f'stroke="{colour}" stroke-width="2" stroke-dasharray="3 2"><title>ceiling, '
                             f'{escape(names.get(g, g))}: {ceiling:.3f}</title></line>')
    for r, row in enumerate(legend_rows):
        ly = plot_bottom + axis_h + 18 * r + 12
        for kind, text, lx in row:
            if kind in ("ceiling", "chance", "whisker"):
                dash = {"ceiling": 'stroke-dasharray="3 2" stroke="#333"', "chance": 'stroke-dasharray="6 3" '
                        'stroke="#666"', "whisker": 'stroke="#111"'}[kind]
                parts.append(f'<line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 12:.1f}" y2="{ly - 4}" {dash} '
                             'stroke-width="2"/>')
            else:
                fill = f"url(#small-{escape(metric)})" if kind == "small" else kind
                parts.append(f'<rect x="{lx:.1f}" y="{ly - 10}" width="12" height="10" fill="{fill}" stroke="#555"/>')
            parts.append(f'<text class="legend" x="{lx + 18:.1f}" y="{ly}" font-size="11">{escape(text)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text in it went through escape()
