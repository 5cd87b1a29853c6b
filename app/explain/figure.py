"""Publication-ready figure of an explanation panel: the aligned face, then one overlay per method.

Built with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``) and never pyplot: pyplot keeps a
global registry of open figures (a leak in a long-running server unless every path closes them) and a
global "current figure" that concurrent requests would trample. The overlays are the same pixels the web
app shows (:func:`app.explain.render.overlay_image`), so a figure in a paper matches what raters saw.

Layout is computed in inches rather than left to a layout engine, so the figure's size follows from the
number of panels alone and the output is identical on every run (tests compare pixels).
"""

from __future__ import annotations

import math
import textwrap
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import FixedFormatter, FixedLocator

from app.explain.render import (
    MAGNITUDE_CMAP,
    ROBUST_PERCENTILE,
    SIGNED_CMAP,
    MapScale,
    encode_png,
    map_scale,
    overlay_image,
)

__all__ = ["FIGURE_DPI", "FigurePanel", "build_panel_figure", "figure_grid", "panel_figure_png"]

#: Print resolution; journals ask for >= 150-300 dpi for halftones.
FIGURE_DPI = 200

# Geometry in inches. One cell: title, square image, gap, colour bar, tick labels.
_MARGIN_X = 0.25
_CELL = 1.9
_GAP_X = 0.3
_TITLE_H = 0.36
_CBAR_GAP = 0.06
_CBAR_H = 0.11
_TICKS_H = 0.3
_ROW_GAP = 0.12
_ROW_H = _TITLE_H + _CELL + _CBAR_GAP + _CBAR_H + _TICKS_H + _ROW_GAP
_HEADER_LINE = 0.24
WARNING_COLOUR = "#b3261e"  # the pages' danger red
_FOOTER_LINE = 0.14
_PAD_Y = 0.12
_TITLE_PT = 11
_PANEL_TITLE_PT = 8.5
_TICK_PT = 7
_FOOT_PT = 6.5
# Rough characters per inch for DejaVu Sans at these sizes, to wrap text before matplotlib lays it out.
_CHARS_PER_INCH_TITLE = 11.0
_CHARS_PER_INCH_PANEL = 14.5
_CHARS_PER_INCH_FOOT = 19.0

# Matplotlib's FAQ: "Matplotlib is not thread-safe ... it is your responsibility to set up the proper
# locks to serialize access to Matplotlib artists". Separate figures on Agg usually work in parallel,
# but font and text-layout caches are shared process-wide, so building and drawing are serialised:
# figure exports are rare and take a fraction of a second, and an occasional wait beats a corrupt figure.
_MATPLOTLIB_LOCK = threading.RLock()


@dataclass(frozen=True, eq=False)
class FigurePanel:
    """One method's map for the figure: ``values`` is float (H, W) in crop coordinates."""

    method_id: str
    label: str  # human-readable method name, printed as the panel's title
    values: np.ndarray
    signed: bool


def figure_grid(n_cells: int, columns: int) -> tuple[int, int]:
    """(rows, columns) for ``n_cells`` with at most ``columns`` per row, rows filled as evenly as possible.

    ``columns`` is a maximum: 11 cells (face + 10 methods) with at most 5 per row become 3 rows of 4
    rather than 5 + 5 + 1, which would leave a lonely panel and a wide empty band.
    """
    if n_cells < 1 or columns < 1:
        raise ValueError(f"need at least one cell and one column, got {n_cells} cells, {columns} columns")
    rows = math.ceil(n_cells / columns)
    return rows, math.ceil(n_cells / rows)


def build_panel_figure(
    crop_rgb: np.ndarray,
    panels: Sequence[FigurePanel],
    *,
    target_label: str,
    model_version: str,
    case_label: str | None = None,
    columns: int = 5,
    opacity: float = 0.6,
    dpi: int = FIGURE_DPI,
    warning: str | None = None,
) -> Figure:
    """The figure as a matplotlib ``Figure`` (with an Agg canvas), before encoding.

    Public so tests and callers wanting SVG/PDF can inspect or save the artists; draw it while holding no
    other matplotlib work in parallel (see :data:`_MATPLOTLIB_LOCK`), or use :func:`panel_figure_png`.
    Each panel has its own colour scale (robust maximum of that map), because methods differ in units by
    orders of magnitude; the footnote says so, so nobody compares colours across panels.

    ``warning`` (e.g. the face is out of the model's range) is printed in red under the title: a downloaded
    figure travels without the page that warned, so it carries the warning itself.
    """
    crop = np.asarray(crop_rgb)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"crop_rgb must be uint8 (H, W, 3), got {crop.dtype} {crop.shape}")
    if not panels:
        raise ValueError("a figure needs at least one panel")
    for panel in panels:
        if np.shape(panel.values) != crop.shape[:2]:
            raise ValueError(f"panel {panel.method_id!r} map {np.shape(panel.values)} != crop {crop.shape[:2]}")

    rows, cols = figure_grid(len(panels) + 1, columns)
    width = 2 * _MARGIN_X + cols * _CELL + (cols - 1) * _GAP_X
    header = _header_lines(target_label, model_version, case_label, width)
    footer = _footer_lines(width, any(p.signed for p in panels), any(not p.signed for p in panels))
    warning_lines = textwrap.wrap(warning, width=max(20, int(width * _CHARS_PER_INCH_TITLE))) if warning else []
    header_h = _PAD_Y + (len(header) + len(warning_lines)) * _HEADER_LINE
    footer_h = len(footer) * _FOOTER_LINE + _PAD_Y
    height = header_h + rows * _ROW_H + footer_h

    with _MATPLOTLIB_LOCK:
        fig = Figure(figsize=(width, height), dpi=dpi, facecolor="white")
        FigureCanvasAgg(fig)
        fig.text(
            0.5, 1 - _PAD_Y / height, "\n".join(header), ha="center", va="top", fontsize=_TITLE_PT, fontweight="bold"
        )
        if warning_lines:
            fig.text(0.5, 1 - (_PAD_Y + len(header) * _HEADER_LINE) / height, "\n".join(warning_lines), ha="center",
                     va="top", fontsize=_TITLE_PT, fontweight="bold", color=WARNING_COLOUR, gid="warning")
        fig.text(
            _MARGIN_X / width,
            _PAD_Y / 2 / height,
            "\n".join(footer),
            ha="left",
            va="bottom",
            fontsize=_FOOT_PT,
            color="#444444",
            linespacing=1.35,
        )

        def cell_axes(index: int) -> tuple[list[float], list[float]]:
            """Figure-fraction rects [l, b, w, h] of cell ``index``'s image and colour bar."""
            row, col = divmod(index, cols)
            left = _MARGIN_X + col * (_CELL + _GAP_X)
            image_top = height - header_h - row * _ROW_H - _TITLE_H
            image_bottom = image_top - _CELL
            cbar_bottom = image_bottom - _CBAR_GAP - _CBAR_H
            image = [left / width, image_bottom / height, _CELL / width, _CELL / height]
            cbar = [left / width, cbar_bottom / height, _CELL / width, _CBAR_H / height]
            return image, cbar

        face_rect, _ = cell_axes(0)
        face_ax = fig.add_axes(face_rect)
        face_ax.imshow(crop, interpolation="nearest")
        face_ax.set_title("Aligned face", fontsize=_PANEL_TITLE_PT)
        face_ax.set_axis_off()

        for index, panel in enumerate(panels, start=1):
            scale = map_scale(panel.values, signed=panel.signed)
            image_rect, cbar_rect = cell_axes(index)
            ax = fig.add_axes(image_rect, gid=f"panel:{panel.method_id}")
            # Nearest: shows the map at its true 112 px resolution instead of inventing smoothness.
            ax.imshow(overlay_image(crop, panel.values, scale, opacity=opacity), interpolation="nearest")
            title = textwrap.fill(panel.label, width=max(8, int(_CELL * _CHARS_PER_INCH_PANEL)), max_lines=2)
            ax.set_title(title, fontsize=_PANEL_TITLE_PT)
            ax.set_axis_off()
            _draw_colorbar(fig, fig.add_axes(cbar_rect, gid=f"colorbar:{panel.method_id}"), scale)
    return fig


def panel_figure_png(
    crop_rgb: np.ndarray,
    panels: Sequence[FigurePanel],
    *,
    target_label: str,
    model_version: str,
    case_label: str | None = None,
    columns: int = 5,
    opacity: float = 0.6,
    dpi: int = FIGURE_DPI,
    warning: str | None = None,
) -> bytes:
    """The figure as PNG bytes (opaque RGB at ``dpi``), identical for identical input.

    The canvas buffer is encoded by :func:`app.explain.render.encode_png` rather than ``savefig``, so no
    matplotlib-version metadata or timestamp ends up in the file.
    """
    with _MATPLOTLIB_LOCK:
        fig = build_panel_figure(
            crop_rgb,
            panels,
            target_label=target_label,
            model_version=model_version,
            case_label=case_label,
            columns=columns,
            opacity=opacity,
            dpi=dpi,
            warning=warning,
        )
        canvas = fig.canvas
        assert isinstance(canvas, FigureCanvasAgg)
        canvas.draw()
        rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return encode_png(rgb)


def _draw_colorbar(fig: Figure, cax: Axes, scale: MapScale) -> None:
    """A horizontal colour bar with value ticks; signed bars are ±s with 0 in the middle."""
    span = scale.vmax
    if span > 0:
        low, high = scale.vmin, scale.vmax
        ticks = [low, 0.0, high] if scale.signed else [0.0, high / 2, high]
        labels = [_format_tick(t) for t in ticks]
    else:  # an all-zero map: draw the bar on a nominal range but claim no values beyond 0
        low, high = (-1.0, 1.0) if scale.signed else (0.0, 1.0)
        ticks, labels = [0.0], ["0 (map is all zero)"]
    mappable = ScalarMappable(norm=Normalize(vmin=low, vmax=high), cmap=colormaps[scale.cmap])
    bar = fig.colorbar(mappable, cax=cax, orientation="horizontal")
    bar.ax.xaxis.set_major_locator(FixedLocator(ticks))
    bar.ax.xaxis.set_major_formatter(FixedFormatter(labels))
    bar.ax.xaxis.set_minor_locator(FixedLocator([]))
    bar.ax.tick_params(labelsize=_TICK_PT, length=2, pad=1.5)
    if len(ticks) > 1:  # end labels inside the bar's span: long ones ("−1.2e-05") no longer run into the next cell
        tick_labels = bar.ax.get_xticklabels()
        tick_labels[0].set_horizontalalignment("left")
        tick_labels[-1].set_horizontalalignment("right")
    bar.outline.set_linewidth(0.5)


def _format_tick(value: float) -> str:
    """Two significant digits (attributions range from 1e-4 to 1e2), a real minus sign, exact 0."""
    if value == 0:
        return "0"
    return f"{value:.2g}".replace("-", "\u2212")


def _header_lines(target_label: str, model_version: str, case_label: str | None, width: float) -> list[str]:
    parts = [f"Target: {target_label} · model {model_version}"]
    if case_label:
        parts.insert(0, f"Case {case_label}")
    return textwrap.wrap(" · ".join(parts), width=max(20, int((width - 2 * _MARGIN_X) * _CHARS_PER_INCH_TITLE)))


def _footer_lines(width: float, has_signed: bool, has_unsigned: bool) -> list[str]:
    sentences = [
        "Attribution maps on the aligned crop; each panel has its own colour scale, clipped at the "
        f"{ROBUST_PERCENTILE:g}th percentile of |value|, so colours are not comparable across panels.",
    ]
    if has_signed:
        sentences.append(f"Signed maps ({SIGNED_CMAP}): red = evidence for the target, blue = against, white = 0.")
    if has_unsigned:
        sentences.append(f"Unsigned maps ({MAGNITUDE_CMAP}): magnitude only, no direction.")
    sentences.append("Research use only; not a diagnostic device.")
    return textwrap.wrap(" ".join(sentences), width=max(30, int((width - 2 * _MARGIN_X) * _CHARS_PER_INCH_FOOT)))
