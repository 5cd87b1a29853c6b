"""Gaze metrics against pysaliency (the reference implementation of the MIT/Tübingen benchmark metrics) and
against slow, literal re-implementations where pysaliency has no equivalent; and on cases with known answers.

pysaliency 0.2.22's package ``__init__`` imports ``pkg_resources`` (gone from current setuptools), so its
metric modules are loaded from their files: ``metrics.py`` (NSS, CC, SIM, KL) and ``numba_utils.py``
(``general_roc``, the ROC every AUC of pysaliency goes through).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from app.evaluate import gaze
from app.evaluate.gaze import Fixations
from app.evaluate.gaze_maps import (
    GazeTable,
    ViewingGeometry,
    bootstrap,
    ceiling,
    density_map,
    group_vs_group,
    map_vs_gaze,
    matrix_scale,
    pooled,
    to_aligned,
)
from app.vision.align import ARCFACE_TEMPLATE, similarity_matrix


def _pysaliency(name: str) -> ModuleType:
    spec = importlib.util.find_spec("pysaliency")
    assert spec is not None and spec.submodule_search_locations, "pysaliency (test dependency) is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / f"{name}.py"
    module_spec = importlib.util.spec_from_file_location(f"_pysaliency_{name}", path)
    assert module_spec and module_spec.loader
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ps_metrics() -> ModuleType:
    return _pysaliency("metrics")


@pytest.fixture(scope="module")
def ps_roc() -> ModuleType:
    """pysaliency's ROC; its last line calls ``np.trapz``, which numpy 2.4 removed (``np.trapezoid`` is the
    same trapezoid rule), so the module sees a numpy that still has it."""
    module = _pysaliency("numba_utils")
    shim = ModuleType("numpy_with_trapz")
    shim.__dict__.update(np.__dict__)
    shim.trapz = np.trapezoid  # type: ignore[attr-defined]
    module.np = shim  # type: ignore[attr-defined]
    return module


def _case(seed: int, n: int = 25, signed: bool = False) -> tuple[np.ndarray, Fixations, Fixations]:
    """A smooth random map (ties included: it is quantised), fixations clustered near its peaks, and other
    fixations (another case's) for shuffled AUC."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(112, 112))
    from scipy.ndimage import gaussian_filter

    smap = gaussian_filter(raw, 6)
    smap = np.round(smap / np.abs(smap).max() * 40) / 40  # quantised: ties at thresholds
    if not signed:
        smap = smap - smap.min()
    peak = np.unravel_index(np.argmax(smap), smap.shape)
    xy = np.clip(rng.normal([peak[1], peak[0]], 12, size=(n, 2)), 0, 111.9)
    xy[:3] = xy[0]  # repeated fixations in one pixel
    other = rng.uniform(0, 112, size=(n * 2, 2))
    return smap, Fixations.of(xy, rng.uniform(80, 600, n)), Fixations.of(other)


SEEDS = [1, 2, 3, 7]


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")  # pysaliency's log(0)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("signed", [False, True])
def test_map_metrics_equal_pysaliency(seed: int, signed: bool, ps_metrics: ModuleType) -> None:
    smap, fix, _ = _case(seed, signed=signed)
    density = density_map(fix, sigma=4.0)
    rows, cols = fix.indices(smap.shape)
    assert gaze.nss(smap, fix) == pytest.approx(np.mean(ps_metrics.NSS(smap, cols, rows)), abs=1e-12)
    assert gaze.cc(smap, density) == pytest.approx(ps_metrics.CC(smap, density), abs=1e-12)
    assert gaze.sim(smap, density) == pytest.approx(ps_metrics.SIM(smap.copy(), density.copy()), abs=1e-12)
    assert gaze.kl(smap, density) == pytest.approx(ps_metrics.MIT_KLDiv(smap.copy(), density.copy()), rel=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_aucs_equal_pysaliency(seed: int, ps_roc: ModuleType) -> None:
    smap, fix, other = _case(seed)
    rows, cols = fix.indices(smap.shape)
    positives = smap[rows, cols].astype(float)
    fixated = np.zeros(smap.shape)
    fixated[rows, cols] = 1
    judd, _, _ = ps_roc.general_roc_numba(positives, smap[fixated == 0].astype(float), judd=1)
    assert gaze.auc_judd(smap, fix) == pytest.approx(judd, abs=1e-12)
    uniform, _, _ = ps_roc.general_roc_numba(positives, smap.ravel().astype(float), judd=0)
    assert gaze.auc_exact(smap, fix) == pytest.approx(uniform, abs=1e-12)
    o_rows, o_cols = other.indices(smap.shape)
    shuffled, _, _ = ps_roc.general_roc_numba(positives, smap[o_rows, o_cols].astype(float), judd=0)
    assert gaze.auc_shuffled(smap, fix, other) == pytest.approx(shuffled, abs=1e-12)


def _slow_borji(smap: np.ndarray, fix: Fixations, splits: int, step: float, seed: int) -> float:
    """MIT AUC_Borji.m, line by line (with the same seeded draws as the implementation under test)."""
    s = (smap - smap.min()) / (smap.max() - smap.min())
    rows, cols = fix.indices(s.shape)
    sth = [float(s[r, c]) for r, c in zip(rows, cols, strict=True)]
    flat = s.ravel()
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, flat.size, size=(splits, len(sth)))
    aucs = []
    for draw in draws:
        negatives = [float(flat[i]) for i in draw]
        top = max(max(sth), max(negatives))
        thresholds = []
        t = 0.0
        while t <= top + 1e-12:
            thresholds.append(t)
            t = round(t + step, 10)
        thresholds.reverse()
        tp, fp = [0.0], [0.0]
        for th in thresholds:
            tp.append(sum(v >= th for v in sth) / len(sth))
            fp.append(sum(v >= th for v in negatives) / len(negatives))
        tp.append(1.0)
        fp.append(1.0)
        aucs.append(sum((fp[i + 1] - fp[i]) * (tp[i + 1] + tp[i]) / 2 for i in range(len(tp) - 1)))
    return sum(aucs) / len(aucs)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_auc_borji_equals_slow_reference(seed: int) -> None:
    smap, fix, _ = _case(seed)
    assert gaze.auc_borji(smap, fix, splits=20, seed=5) == pytest.approx(
        _slow_borji(smap, fix, splits=20, step=0.1, seed=5), abs=1e-9)


def _slow_top_iou(a: np.ndarray, b: np.ndarray, q: float) -> float:
    count = max(1, round(a.size * q / 100))
    def top(m: np.ndarray) -> set[int]:
        ranked = sorted(range(m.size), key=lambda i: (-float(m.ravel()[i]), i))
        return set(ranked[:count])
    ta, tb = top(a), top(b)
    return len(ta & tb) / len(ta | tb)


@pytest.mark.parametrize("q", [2.0, 10.0, 25.0])
def test_top_iou_equals_slow_reference(q: float) -> None:
    a, fix, _ = _case(4)
    b = density_map(fix, sigma=5.0)
    assert gaze.top_iou(a, b, q=q) == pytest.approx(_slow_top_iou(a, b, q))
    assert gaze.top_mask(a, q).sum() == max(1, round(a.size * q / 100))


def test_the_fixation_density_itself_scores_best() -> None:
    _, fix, other = _case(9, n=40)
    density = density_map(fix, sigma=4.0)
    best = gaze.score_all(density, density, fix, other)
    assert best["cc"] == pytest.approx(1.0)
    assert best["sim"] == pytest.approx(1.0)
    assert best["kl"] == pytest.approx(0.0, abs=1e-9)
    assert best["top_iou"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    from scipy.ndimage import gaussian_filter

    for trial in range(5):  # any other map scores worse on every map metric, and worse on NSS and AUCs
        rival = gaussian_filter(rng.random((112, 112)), 3 + trial)
        worse = gaze.score_all(rival, density, fix, other)
        assert worse["cc"] < best["cc"] and worse["sim"] < best["sim"] and worse["kl"] > best["kl"]
        assert worse["nss"] < best["nss"] and worse["auc_judd"] < best["auc_judd"]
        assert worse["auc_shuffled"] < best["auc_shuffled"]


def test_a_flat_map_is_chance() -> None:
    _, fix, other = _case(3)
    flat = np.ones((112, 112))
    assert gaze.nss(flat, fix) == 0.0
    assert gaze.auc_exact(flat, fix) == pytest.approx(0.5)
    assert gaze.auc_shuffled(flat, fix, other) == pytest.approx(0.5)
    assert gaze.auc_judd(flat, fix) == pytest.approx(0.5)
    assert math.isnan(gaze.cc(flat, density_map(fix, sigma=3)))


def test_sigma_from_viewing_geometry() -> None:
    geometry = ViewingGeometry(angle_deg=1.0, distance_cm=60, px_per_cm=96 / 2.54)
    assert geometry.sigma_screen_px() == pytest.approx(math.tan(math.radians(1)) * 600 * 96 / 25.4)
    shown_twice = ViewingGeometry(screen_px_per_photo_px=2.0)
    assert shown_twice.sigma_aligned_px(0.5) == pytest.approx(ViewingGeometry().sigma_screen_px() / 4)


def test_density_map_is_a_normalised_gaussian_at_the_fixation() -> None:
    fix = Fixations.of([[40.5, 60.5]])
    density = density_map(fix, sigma=3.0)
    assert density.sum() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(density), density.shape) == (60, 40)
    # a Gaussian: the value one σ away is exp(-1/2) of the peak (within the discretisation)
    assert density[60, 43] / density[60, 40] == pytest.approx(math.exp(-0.5), rel=0.02)
    weighted = density_map(Fixations.of([[20, 20], [90, 90]], [100, 300]), sigma=2.0)
    assert weighted[90, 90] == pytest.approx(3 * weighted[20, 20], rel=1e-6)
    nothing = density_map(Fixations.of([[-5, 3]]), sigma=2.0)  # nothing on the map: uniform
    np.testing.assert_allclose(nothing, 1 / 112**2)


def test_coordinate_mapping_with_a_known_alignment() -> None:
    """Landmarks in a photo are mapped onto the template by the alignment matrix fitted to them."""
    angle = math.radians(12)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    photo = (ARCFACE_TEMPLATE - 56) @ rotation.T * 3.5 + np.array([400.0, 520.0])  # scaled 3.5, turned 12°
    matrix = similarity_matrix(photo)
    x, y = to_aligned(matrix.tolist(), photo[:, 0], photo[:, 1])
    np.testing.assert_allclose(np.stack([x, y], axis=1), ARCFACE_TEMPLATE, atol=1e-9)
    assert matrix_scale(matrix.tolist()) == pytest.approx(1 / 3.5)


def _table() -> GazeTable:
    """Two groups on six cases: the "near" group looks where the map is high, the "far" group elsewhere."""
    rng = np.random.default_rng(11)
    rows = []
    for c in range(6):
        for group, centre in (("near", (40, 50)), ("far", (80, 90))):
            for p in range(3):
                for _ in range(8):
                    x, y = rng.normal(centre, 5)
                    rows.append((f"{group}{p}", group, f"case{c}", x, y, rng.uniform(100, 400)))
    cols = list(zip(*rows, strict=True))
    return GazeTable(*cols, sigma={f"case{c}": 4.0 for c in range(6)})


def test_comparisons_ceiling_and_intervals() -> None:
    table = _table()
    yy, xx = np.mgrid[0:112, 0:112]
    near_map = np.exp(-((xx - 40) ** 2 + (yy - 50) ** 2) / 200.0)
    maps = {case: near_map for case in table.cases()}
    near = pooled(map_vs_gaze(table, maps, group="near"))
    far = pooled(map_vs_gaze(table, maps, group="far"))
    assert near["nss"].mean > 1 > 0 > far["nss"].mean
    assert near["cc"].mean > far["cc"].mean
    assert near["nss"].low <= near["nss"].mean <= near["nss"].high and near["nss"].n == 6
    ceiling_near = pooled(ceiling(table, group="near"))
    assert ceiling_near["cc"].mean > 0.5 and ceiling_near["auc_judd"].mean > 0.9
    across = pooled(group_vs_group(table, "near", "far"))
    assert across["cc"].mean < ceiling_near["cc"].mean
    assert across["top_iou"].mean < ceiling_near["top_iou"].mean


def test_bootstrap() -> None:
    estimate = bootstrap([1.0, 2.0, 3.0, 4.0, float("nan")], seed=1)
    assert estimate.n == 4 and estimate.mean == pytest.approx(2.5)
    assert 1.0 <= estimate.low < 2.5 < estimate.high <= 4.0
    assert bootstrap([1.0, 2.0, 3.0], seed=1) == bootstrap([1.0, 2.0, 3.0], seed=1)


def test_ceiling_equals_a_direct_leave_one_out() -> None:
    """The ceiling subtracts one participant's blurred counts from everyone's (the blur is linear); a direct
    density of the other participants' fixations gives the same scores."""
    table = _table()
    case = "case2"
    fast = ceiling(table, group="near")[case]
    here = (table.group == "near") & (table.case == case)
    rows = []
    for person in sorted(set(table.participant[here].tolist())):
        fix = table.select(here & (table.participant == person))
        rest = density_map(table.select(here & (table.participant != person)), sigma=4.0)
        others = table.select((table.group == "near") & (table.case != case) & (table.participant == person))
        rows.append(gaze.score_all(rest, density_map(fix, sigma=4.0), fix, others))
    for metric, value in fast.items():
        assert value == pytest.approx(np.mean([r[metric] for r in rows]), rel=1e-9, abs=1e-12), metric
