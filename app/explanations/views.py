"""What the comparison view and the image endpoints show: grid contexts, cards, PNGs and the figure.

Rendering itself lives in the ML core (``app.explain.render`` / ``app.explain.figure``); this module
only picks the rows, reads the stored maps and hands them over.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import numpy as np
from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases import service as case_service
from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.errors import Conflict
from app.explain import figure as figure_render
from app.explain import render
from app.explain.registry import DEFAULT_PANEL, METHODS, get_method
from app.explanations.models import Explanation
from app.explanations.service import read_map
from app.jobs.models import FINISHED, QUEUED, RUNNING, Job
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png, latest_run, out_of_range, out_of_range_text
from app.predictions.serving import model_problem, served_model
from app.vision.geometry import invert_affine

ORDER = {method: i for i, method in enumerate(METHODS)}


def _nothing_to_show(detail: str) -> Conflict:
    """409 ``not_ready``: the figure has no finished map to draw yet."""
    return Conflict("not_ready", detail)


def _scale(row: Explanation, values: np.ndarray) -> render.MapScale:
    info = METHODS.get(row.method)
    # A stored map of a method this version no longer offers: its sign decides the colours.
    signed = info.signed if info else bool(values.min() < 0)
    return render.map_scale(values, signed=signed)


def map_png(store: PhotoStore, case: Case, row: Explanation, *, view: str, space: str, opacity: float) -> bytes:
    values = read_map(store.read(row.map_path or ""))
    scale = _scale(row, values)
    inverse = invert_affine(np.asarray(case.align_matrix, dtype=np.float64)) if space == "photo" else None
    if view == "heat":
        if inverse is None:
            return render.heat_png_crop(values, scale)
        return render.heat_png_photo(values, scale, inverse=inverse, photo_size=(case.photo_width, case.photo_height))
    base = decode_png(store.read(case.aligned_path)) if inverse is None else _photo_rgb(store, case)
    return render.overlay_png(base, values, scale, opacity=opacity, inverse=inverse)


def _photo_rgb(store: PhotoStore, case: Case) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(store.read(case.photo_path), np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@lru_cache(maxsize=2)
def colorbar(kind: str) -> bytes:
    return render.colorbar_png(render.SIGNED_CMAP if kind == "signed" else render.MAGNITUDE_CMAP)


def member_label(row: Explanation) -> str:
    """What an ensemble map explains, for titles ("" for a single network's map; service.resolve_member)."""
    member = (row.params or {}).get("member")
    if member is None:
        return ""
    return " (averaged over the members)" if member == "mean" else f" (member {member})"


def card(row: Explanation) -> dict[str, Any]:
    """Everything one map card shows (the template adds no logic of its own)."""
    info = METHODS.get(row.method)
    signed = bool(info and info.signed)
    stats = row.stats or {}
    base = f"/api/v1/explanations/{row.id}"
    return {
        "id": row.id,
        "method": row.method,
        "label": (info.label if info else row.method) + member_label(row),
        "description": info.description if info else "",
        "reduction": info.reduction if info else "",
        "signed": signed,
        "state": row.state,
        "error": row.error,
        "pending": row.state in (QUEUED, RUNNING),
        "vmin": stats.get("vmin"),
        "vmax": stats.get("vmax"),
        "duration_ms": row.duration_ms,
        "mode": row.mode,  # "fast" maps carry a visible tag (app.explain.fast)
        "heat_crop": f"{base}/map.png?view=heat&space=crop",
        "heat_photo": f"{base}/map.png?view=heat&space=photo",
        "overlay": f"{base}/map.png?view=overlay&space=crop",
        "npy": f"{base}/map.npy",
        "colorbar": f"/api/v1/colorbars/{'signed' if signed else 'magnitude'}.png",
        "case_id": row.case_id,
        "completeness_error": stats.get("completeness_error"),  # IG / DeepLIFT: |Σ map − Δf| / |Δf| (issue 10)
    }


def _latest_per_method(db: Session, *, case_id: str, model: LoadedModel, target: str) -> dict[str, Explanation]:
    rows = db.scalars(select(Explanation).where(
        Explanation.case_id == case_id, Explanation.model_id == model.card.id,
        Explanation.model_version == model.card.version, Explanation.target_id == target,
        Explanation.objective == "logit", Explanation.subject == "",  # similarity maps live on the Compare page
    ).order_by(Explanation.created_at.asc()))
    return {row.method: row for row in rows if row.method in METHODS}  # the newest request per method wins


def _default_target(db: Session, case_id: str, model: LoadedModel) -> str | None:
    newest = db.scalar(select(Explanation.target_id).where(
        Explanation.case_id == case_id, Explanation.model_id == model.card.id,
        Explanation.model_version == model.card.version, Explanation.objective == "logit",
    ).order_by(Explanation.created_at.desc()).limit(1))
    if newest:
        return newest
    run = latest_run(db, case_id=case_id)
    if run and (run.model_id, run.model_version) == (model.card.id, model.card.version) and run.ranked:
        known = {label.id for label in model.labels}  # a gallery- or case-only syndrome has no logit
        return next((r["syndrome_id"] for r in run.ranked if r["syndrome_id"] in known), None)
    return None


def grid_context(request: Request, db: Session, *, user: User, case_id: str, target: str | None = None,
                 methods: list[str] | None = None, job_id: str | None = None,
                 shown: list[Explanation] | None = None) -> dict[str, Any]:
    """``shown``: the rows just asked for, shown instead of the newest per method (an ensemble's member choice)."""
    case = case_service.get_case(db, user=user, case_id=case_id)
    model = served_model(request)
    ctx: dict[str, Any] = {"case": case, "cards": [], "job": None, "target": None, "problem": None,
                           "model_version": None, "figure_url": None, "targets": [], "methods": [],
                           "default_panel": DEFAULT_PANEL, "members": []}
    if model is None:
        ctx["problem"] = model_problem(request)
        return ctx
    ctx["model_version"] = model.version
    # an ensemble's form offers each member (m0 first: the maps from before ensembles) and the averaged logit
    ctx["members"] = [{"value": m.name, "label": f"{m.name} ({m.id})"} for m in model.ensemble if m.has_head] \
        if model.members else []
    ctx["fast_default"] = request.app.state.settings.explain_mode == "fast"  # the form's fast-mode box
    run = latest_run(db, case_id=case.id)
    scores = {}
    if run and (run.model_id, run.model_version) == (model.card.id, model.card.version):
        scores = {p["syndrome_id"]: p for p in run.ranked
                  if any(label.id == p["syndrome_id"] for label in model.labels)}  # targets are head classes
    order = [p for p in scores] + [label.id for label in model.labels if label.id not in scores]
    names = {label.id: label.name for label in model.labels}
    target = target if target in names else _default_target(db, case.id, model)
    # The dropdown repeats the ranking's order and its ordering score (similarity when a gallery ranks), never
    # the softmax beside a gallery order (issue 11: rows contradicted their order).
    ctx["targets"] = [{"id": sid, "name": names[sid], "rank": scores.get(sid, {}).get("rank"),
                       "similarity": (1 - scores[sid]["distance"]) if scores.get(sid, {}).get("distance") is not None
                       else None,
                       "score": scores.get(sid, {}).get("score"), "by_gallery": run is not None and
                       run.ranked_by == "gallery", "selected": sid == target} for sid in order]
    ctx["methods"] = [{"id": m.id, "label": m.label, "description": m.description,
                       "checked": m.id in DEFAULT_PANEL} for m in METHODS.values()]
    if target is None:
        return ctx
    ctx["target"] = {"id": target, "name": names[target]}
    ctx["ood"] = out_of_range(db, case_id=case.id)
    rows = _latest_per_method(db, case_id=case.id, model=model, target=target)
    rows.update({row.method: row for row in shown or () if row.target_id == target and row.method in METHODS})
    chosen = [rows[m] for m in sorted(rows, key=ORDER.__getitem__) if methods is None or m in methods]
    ctx["cards"] = [card(row) for row in chosen]
    if job_id is None:
        job_id = next((row.job_id for row in chosen if row.state in (QUEUED, RUNNING) and row.job_id), None)
    job = db.get(Job, job_id) if job_id else None
    ctx["job"] = job if job is not None and job.state not in FINISHED else None
    ctx["progress"] = progress_info(db, ctx["job"]) if ctx["job"] is not None else None
    if any(row.state == "done" for row in chosen):
        query = urlencode({"target": target, "methods": ",".join(row.method for row in chosen)})
        ctx["figure_url"] = f"/api/v1/cases/{case.id}/explanations/figure.png?{query}"
    return ctx


def figure(store: PhotoStore, db: Session, *, case: Case, model: LoadedModel, target: str | None,
           methods: list[str] | None) -> tuple[bytes, str]:
    target = target or _default_target(db, case.id, model)
    if target is None:
        raise _nothing_to_show("This case has no maps yet.")
    rows = _latest_per_method(db, case_id=case.id, model=model, target=target)
    done = [rows[m] for m in sorted(rows, key=ORDER.__getitem__)
            if rows[m].state == "done" and (methods is None or m in methods)]
    if not done:
        raise _nothing_to_show(f"No finished maps for target {target!r} with model {model.version}.")
    # a fast-mode map says so in its title: a figure must not pass an approximation off as the exact map
    panels = [figure_render.FigurePanel(method_id=row.method, label=METHODS[row.method].label + member_label(row)
                                        + (" (fast mode)" if row.mode == "fast" else ""),
                                        values=read_map(store.read(row.map_path or "")),
                                        signed=METHODS[row.method].signed) for row in done]
    crop = decode_png(store.read(case.aligned_path))
    ood = out_of_range(db, case_id=case.id)
    png = figure_render.panel_figure_png(crop, panels, target_label=done[0].target_name,
                                         model_version=model.version, case_label=case.pseudonym or case.id[:8],
                                         warning=out_of_range_text(ood) if ood else None)
    return png, f"gestaltlens-{case.id[:8]}-{target}.png"


EARLY_ESTIMATE = 0.25  # progress before which the warm-up dominates an estimate from the job's start


def _pass_cost(row: Explanation) -> float:
    try:
        return float(sum(get_method(row.method).passes(dict(row.params or {})).values()))
    except (KeyError, ValueError, TypeError):
        return 1.0


def progress_info(db: Session, job: Job) -> dict[str, Any]:
    """What the progress line says: "n of m maps · now computing X · about N s left".

    The job's ``progress`` is weighted by cost (occlusion is most of a panel), so a bare percentage read 1%
    with half the maps shown. Counting maps is what a clinician sees; the engine computes the cheapest
    pending method first, so that is the one named as being computed now. The time left is extrapolated
    from the cost-weighted progress, which is what it measures well — but not from the job's start: the first
    seconds load the model and warm it up without moving the progress, and counting them read "about 86 s"
    for a job that ended at 9.8 s (issue 24.11). The rate is measured from the first finished map on (its
    cost share is the progress at that moment); before any map is done only a progress of at least
    :data:`EARLY_ESTIMATE` gives an estimate."""
    from app.db import utcnow

    rows = list(db.scalars(select(Explanation).where(Explanation.job_id == job.id)))
    done = [row for row in rows if row.state == "done"]
    pending = sorted((row for row in rows if row.state in (QUEUED, RUNNING)), key=_pass_cost)
    info: dict[str, Any] = {"done": len(done), "total": len(rows), "now": None, "seconds_left": None}
    if job.state == RUNNING and pending:
        method = METHODS.get(pending[0].method)
        info["now"] = method.label if method else pending[0].method
    if job.state != RUNNING or job.started_at is None or not 0.0 < job.progress < 1.0:
        return info
    now, progress = utcnow(), float(job.progress)
    finished = sorted((row for row in done if row.finished_at is not None), key=lambda row: row.finished_at)
    total_cost = sum(_pass_cost(row) for row in rows) or 1.0
    if finished:
        since, at = finished[0].finished_at, _pass_cost(finished[0]) / total_cost
        elapsed = (now - since).total_seconds()
        if progress > at + 0.01 and elapsed > 0.5:
            info["seconds_left"] = max(1, round(elapsed * (1.0 - progress) / (progress - at)))
            return info
    if progress >= EARLY_ESTIMATE:
        elapsed = (now - job.started_at).total_seconds()
        info["seconds_left"] = max(1, round(elapsed * (1.0 - progress) / progress))
    return info
