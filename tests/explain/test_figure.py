"""The publication figure: layout, texts, colour bars, determinism, threads, no leaked figures."""

from __future__ import annotations

import gc
import io
import itertools
import subprocess
import sys
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from matplotlib import _pylab_helpers
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.text import Text
from PIL import Image

from app.explain.figure import FigurePanel, build_panel_figure, figure_grid, panel_figure_png
from app.explain.render import MAGNITUDE_CMAP, SIGNED_CMAP, map_scale, overlay_image

DPI = 150  # the lowest print resolution allowed; keeps the tests fast
LABELS = [
    "Saliency",
    "Input × Gradient",
    "Integrated Gradients",
    "SmoothGrad",
    "DeepLift",
    "Guided Backprop",
    "Deconvolution",
    "Grad-CAM",
    "Guided Grad-CAM",
    "Occlusion",
]


def make_crop(seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:112, 0:112]
    rng = np.random.default_rng(seed)
    base = np.dstack([170 + yy // 4, 130 + xx // 4, 110 + (xx + yy) // 8]).astype(np.int64)
    return np.clip(base + rng.integers(-10, 10, base.shape), 0, 255).astype(np.uint8)


def make_panels(n: int, seed: int = 0) -> list[FigurePanel]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112]
    panels = []
    for i in range(n):
        cx, cy = rng.uniform(30, 80, 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 150.0) + 0.1 * rng.normal(size=(112, 112))
        signed = i % 3 != 0
        values = (blob if signed else np.abs(blob)).astype(np.float32) * 10.0 ** (i - 5)
        panels.append(FigurePanel(method_id=f"method_{i}", label=LABELS[i], values=values, signed=signed))
    return panels


def render(n: int, seed: int = 0, **kwargs: object) -> bytes:
    options: dict[str, object] = {"target_label": "Syndrome A", "model_version": "demo@1.1.0", "dpi": DPI}
    options.update(kwargs)
    return panel_figure_png(make_crop(seed), make_panels(n, seed), **options)


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def texts_of(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text)]


def test_grid_fills_rows_evenly() -> None:
    assert figure_grid(11, 5) == (3, 4)  # face + 10 methods: 4 + 4 + 3, not 5 + 5 + 1
    assert figure_grid(4, 5) == (1, 4)
    assert figure_grid(2, 5) == (1, 2)
    assert figure_grid(6, 5) == (2, 3)
    assert figure_grid(5, 5) == (1, 5)
    assert figure_grid(7, 3) == (3, 3)


def test_png_decodes_with_the_aspect_of_its_grid() -> None:
    wide = decode(render(3))
    tall = decode(render(10))
    assert wide.ndim == 3 and wide.shape[2] == 3 and wide.dtype == np.uint8
    assert wide.shape[1] == tall.shape[1]  # 4 columns either way
    assert wide.shape[1] / wide.shape[0] > 1.8  # one row of 4
    assert 0.7 < tall.shape[1] / tall.shape[0] < 1.1  # three rows of 4
    assert wide.shape[1] >= 4 * 1.9 * DPI  # each cell is printed at least 1.9 in wide
    fig = build_panel_figure(make_crop(), make_panels(3), target_label="A", model_version="v", dpi=DPI)
    width, height = fig.get_size_inches() * DPI
    assert wide.shape[:2] == (round(height), round(width))


def test_a_single_panel_renders() -> None:  # ten are rendered by the aspect test above
    image = decode(render(1))
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image.std() > 10  # not blank


def test_titles_name_the_target_the_model_the_case_and_every_method() -> None:
    panels = make_panels(4)
    fig = build_panel_figure(
        make_crop(), panels, target_label="Syndrome A", model_version="demo@1.1.0", case_label="P-007", dpi=DPI
    )
    texts = texts_of(fig)
    header = " ".join(texts)
    assert "Target: Syndrome A · model demo@1.1.0" in header
    assert "P-007" in header
    assert "Aligned face" in texts
    for panel in panels:
        assert panel.label in texts
    assert any("not a diagnostic device" in t.replace("\n", " ") for t in texts)


def test_each_panel_shows_the_app_overlay_and_a_matching_colour_bar() -> None:
    crop = make_crop()
    panels = make_panels(3)  # method_0 unsigned, method_1 and method_2 signed
    fig = build_panel_figure(crop, panels, target_label="A", model_version="v", opacity=0.5, dpi=DPI)
    by_gid = {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}
    for panel in panels:
        scale = map_scale(panel.values, signed=panel.signed)
        image_ax = by_gid[f"panel:{panel.method_id}"]
        [image] = [a for a in image_ax.get_children() if isinstance(a, AxesImage)]
        expected = overlay_image(crop, panel.values, scale, opacity=0.5)
        np.testing.assert_array_equal(np.asarray(image.get_array()), expected)

        bar_ax = by_gid[f"colorbar:{panel.method_id}"]
        [mesh] = [c for c in bar_ax.collections if isinstance(c, QuadMesh)]
        ticks = list(bar_ax.get_xticks())
        low, high = bar_ax.get_xlim()
        if panel.signed:
            assert mesh.get_cmap().name == SIGNED_CMAP
            assert low == pytest.approx(-high) and high == pytest.approx(scale.vmax)
            assert 0.0 in ticks and ticks == sorted(ticks) and ticks[0] == -ticks[-1]
        else:
            assert mesh.get_cmap().name == MAGNITUDE_CMAP
            assert (low, high) == pytest.approx((0.0, scale.vmax))
        labels = [t.get_text() for t in bar_ax.get_xticklabels()]
        assert all(labels) and ("0" in labels)


def test_all_zero_panel_renders_without_inventing_a_range() -> None:
    panel = FigurePanel("occlusion", "Occlusion", np.zeros((112, 112), np.float32), signed=True)
    fig = build_panel_figure(make_crop(), [panel], target_label="A", model_version="v", dpi=DPI)
    bar_ax = next(ax for ax in fig.axes if ax.get_gid() == "colorbar:occlusion")
    assert [t.get_text() for t in bar_ax.get_xticklabels()] == ["0 (map is all zero)"]


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one panel"):
        panel_figure_png(make_crop(), [], target_label="A", model_version="v")
    wrong = FigurePanel("saliency", "Saliency", np.zeros((56, 56), np.float32), signed=False)
    with pytest.raises(ValueError, match="saliency"):
        panel_figure_png(make_crop(), [wrong], target_label="A", model_version="v")


def test_rendering_is_deterministic() -> None:
    first, second = render(2, dpi=100), render(2, dpi=100)
    assert first == second
    assert not np.array_equal(decode(first), decode(render(2, seed=1, dpi=100)))  # and it does depend on the input


def test_threads_render_the_same_pixels_as_sequential_calls() -> None:
    seeds = [0, 1, 2, 3]
    sequential = [decode(render(2, seed, target_label=f"Syndrome {seed}", dpi=100)) for seed in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda s: decode(render(2, s, target_label=f"Syndrome {s}", dpi=100)), seeds))
    for one, other in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(one, other)


def test_figures_are_not_leaked() -> None:
    managers = _pylab_helpers.Gcf.get_num_fig_managers()
    fig = build_panel_figure(make_crop(), make_panels(2), target_label="A", model_version="v", dpi=DPI)
    ref = weakref.ref(fig)
    del fig
    gc.collect()
    assert ref() is None, "something still holds the figure"
    render(1)
    assert _pylab_helpers.Gcf.get_num_fig_managers() == managers


def test_pyplot_is_never_imported() -> None:
    script = (
        "import sys, numpy as np\n"
        "from app.explain.figure import FigurePanel, panel_figure_png\n"
        "crop = np.zeros((112, 112, 3), np.uint8)\n"
        "panel = FigurePanel('saliency', 'Saliency', np.ones((112, 112), np.float32), False)\n"
        "panel_figure_png(crop, [panel], target_label='A', model_version='v', dpi=72)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True, timeout=60)


def test_colour_bar_tick_labels_stay_inside_their_cell_and_apart() -> None:
    """Long labels ("−1.2e-05") at the bar's ends used to run into each other and into the next cell."""
    panels = make_panels(6)  # scales from 1e-5 to 1: the widest tick labels there are
    fig = build_panel_figure(make_crop(), panels, target_label="A", model_version="v", dpi=DPI)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bars = [ax for ax in fig.axes if str(ax.get_gid()).startswith("colorbar:")]
    assert len(bars) == len(panels)
    spans = []
    for ax in bars:
        cell = ax.get_window_extent(renderer)
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()]
        assert boxes[0].x0 >= cell.x0 - 1 and boxes[-1].x1 <= cell.x1 + 1, ax.get_gid()
        assert all(a.x1 <= b.x0 for a, b in itertools.pairwise(boxes)), ax.get_gid()
        spans.append((cell.y0, boxes[0].x0, boxes[-1].x1))
    same_row = sorted(spans)
    for (y_a, _, right_a), (y_b, left_b, _) in itertools.pairwise(same_row):
        if abs(y_a - y_b) < 1:
            assert right_a <= left_b
