"""Explanation endpoints: ask for maps (202 + a job), poll the job, list and fetch maps, the figure, and
the case page's comparison view (HTMX partials)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases import service as case_service
from app.cases.job_access import get_job_for
from app.cases.models import Case
from app.errors import DomainError
from app.explanations import service, views
from app.explanations.models import Explanation
from app.jobs import service as job_service
from app.jobs.models import DONE
from app.jobs.outlook import outlook_for
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png, latest_run, rank_crop, store_run
from app.predictions.serving import require_model
from app.web.deps import CurrentUser, DbSession, client_ip
from app.web.errors import ApiError, NotFound
from app.web.jobs import submit_or_fail
from app.web.templating import render

api = APIRouter(tags=["explanations"])
pages = APIRouter(include_in_schema=False)


class ExplainBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[str] | None = Field(default=None, description="method ids; omitted or empty = the default panel")
    # Strict: `true` is neither a syndrome id nor a class index (lax parsing read it as class 1).
    target: StrictStr | StrictInt | None = Field(default=None,
                                                 description="syndrome id or class index; null = top-ranked")
    params: dict[str, dict[str, Any]] | None = Field(default=None, description="per-method parameters")
    mode: Literal["exact", "fast"] | None = Field(
        default=None, description="exact (naive Captum's maps) or fast (measured approximations where offered); "
                                  "null = the deployment's GESTALTLENS_EXPLAIN_MODE")
    member: StrictStr | StrictInt | None = Field(
        default=None, description="ensemble models: null = the target logit averaged over the members (linear "
                                  "methods only), or a member index, \"m<k>\" or member id; single-network models: "
                                  "null, 0, \"m0\" or the model id")


def _ranked_run(request: Request, db: Session, case: Case, model: LoadedModel):
    """The case's ranking by the served model, ranking it now if it has none (a few milliseconds)."""
    run = latest_run(db, case_id=case.id)
    if run is None or (run.model_id, run.model_version) != (model.card.id, model.card.version):
        crop = decode_png(request.app.state.photo_store.read(case.aligned_path))
        run = store_run(db, case=case, model=model, result=rank_crop(model, crop))
    return run


def _request_maps(request: Request, db: Session, *, user: User, case_id: str, body: ExplainBody
                  ) -> tuple[str | None, list[Explanation]]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    model = require_model(request)
    methods = service.check_methods(body.methods)
    member, methods = service.resolve_member(model, body.member, methods, default_panel=not body.methods)
    params = service.checked_params(methods, body.params)
    networks = sum(m.has_head for m in model.ensemble) if member == service.MEAN_MEMBER else 1
    service.check_cost(methods, params, networks=networks)
    params = service.with_member(params, member)
    for attempt in range(2):  # a concurrent identical request may insert the same cache key first
        try:
            run = _ranked_run(request, db, case, model) if body.target is None else None
            target = service.resolve_target(model, body.target, run)
            job_id, rows, job = service.request_explanations(
                db, case=case, user=user, model=model, methods=methods, target=target, params=params,
                mode=body.mode or request.app.state.settings.explain_mode)
            limit = request.app.state.settings.max_active_jobs
            if job is not None and service.active_jobs(db, user=user, exclude=job.id) >= limit:
                db.rollback()
                raise ApiError(429, "too_many_jobs", f"You have {limit} explanation jobs waiting or running; "
                               "ask again when one has finished.")
            audit.record(db, action="explain", user=user, case_id=case.id, ip=client_ip(request),
                         detail={"methods": methods, "model": model.version,  # no target: health data
                                 "job": job.id if job else None})
            db.commit()
            break
        except DomainError:  # a refused target, or too many jobs: nothing of this request is kept
            db.rollback()
            raise
        except IntegrityError:
            db.rollback()
            if attempt:
                raise
    if job is not None:
        submit_or_fail(request, job.id, job.lane)
    return job_id, rows


@api.post("/api/v1/cases/{case_id}/explanations", status_code=202, summary="Compute attribution maps (a job)")
async def create_explanations(case_id: str, body: ExplainBody, request: Request, user: CurrentUser,
                              db: DbSession) -> JSONResponse:
    job_id, rows = await run_in_threadpool(_request_maps, request, db, user=user, case_id=case_id, body=body)
    return JSONResponse({"job_id": job_id, "explanations": [service.explanation_out(r) for r in rows]},
                        status_code=202)


@api.get("/api/v1/cases/{case_id}/explanations", summary="The case's attribution maps, newest first")
def list_explanations(case_id: str, user: CurrentUser, db: DbSession) -> list[dict[str, Any]]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return [service.explanation_out(r) for r in service.explanations_for_case(db, case_id=case.id)]


@api.get("/api/v1/jobs/{job_id}", summary="State and progress of a background job")
def get_job(job_id: str, user: CurrentUser, db: DbSession) -> dict[str, Any]:
    job = get_job_for(db, job_id=job_id, user=user)
    if job is None:
        raise NotFound("job")
    return job_service.job_out(job, outlook_for(db, job))


def _done_row(db: Session, user: User, explanation_id: str) -> Explanation:
    row = service.get_explanation_for(db, explanation_id=explanation_id, user=user)
    if row is None:
        raise NotFound("explanation")
    if row.state != "done" or not row.map_path:
        raise ApiError(409, "not_ready", f"The map is {row.state}" + (f": {row.error}" if row.error else "."))
    return row


@api.get("/api/v1/explanations/{explanation_id}/map.npy", summary="The raw float32 112x112 map",
         response_class=Response)
def map_npy(explanation_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    row = _done_row(db, user, explanation_id)
    data = request.app.state.photo_store.read(row.map_path)
    what = row.target_id if row.objective == "logit" else row.objective.replace(":", "_")  # the objective names it
    name = f"{row.case_id[:8]}-{row.method}-{what}{'-on-' + row.subject.replace(':', '_') if row.subject else ''}.npy"
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@api.get("/api/v1/explanations/{explanation_id}/map.png", summary="The map as PNG", response_class=Response)
def map_png(
    explanation_id: str,
    request: Request,
    user: CurrentUser,
    db: DbSession,
    view: Annotated[str, Query(pattern="^(overlay|heat)$",
                               description="overlay on the image, or the heat layer alone")] = "overlay",
    space: Annotated[str, Query(pattern="^(crop|photo)$", description="aligned crop or full photo")] = "crop",
    opacity: Annotated[float, Query(ge=0.0, le=1.0)] = 0.6,
) -> Response:
    row = _done_row(db, user, explanation_id)
    case = db.get(Case, row.case_id)
    png = views.map_png(request.app.state.photo_store, case, row, view=view, space=space, opacity=opacity)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})  # patient pixels


@api.get("/api/v1/cases/{case_id}/explanations/figure.png", summary="The comparison grid as a figure",
         response_class=Response)
def figure_png(
    case_id: str,
    request: Request,
    user: CurrentUser,
    db: DbSession,
    target: Annotated[str | None, Query(max_length=64)] = None,
    methods: Annotated[str | None, Query(max_length=400, description="comma-separated method ids")] = None,
) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    model = require_model(request)
    wanted = [m.strip() for m in (methods or "").split(",") if m.strip()] or None
    if wanted is not None:  # an unknown id is refused, not dropped: the figure would silently lack the asked-for map
        wanted = service.check_methods(wanted)
    png, name = views.figure(request.app.state.photo_store, db, case=case, model=model, target=target,
                             methods=wanted)
    audit.record(db, action="export", user=user, case_id=case.id, ip=client_ip(request),
                 detail={"what": "figure"})
    db.commit()
    return Response(png, media_type="image/png", headers={"Content-Disposition": f'attachment; filename="{name}"'})


@api.get("/api/v1/colorbars/{kind}.png", summary="Colour bar of signed or magnitude maps", response_class=Response)
def colorbar(kind: str, user: CurrentUser) -> Response:
    if kind not in ("signed", "magnitude"):
        raise NotFound("colour bar")
    return Response(views.colorbar(kind), media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})


# --- the comparison view on the case page -------------------------------------------------------------


@pages.post("/cases/{case_id}/explanations")
async def explain_form(
    case_id: str,
    request: Request,
    user: CurrentUser,
    db: DbSession,
    methods: Annotated[list[str] | None, Form()] = None,
    target: Annotated[str | None, Form(max_length=64)] = None,
    mode: Annotated[Literal["exact", "fast"] | None, Form()] = None,
    member: Annotated[str | None, Form(max_length=64)] = None,
) -> Response:
    if not methods:  # the form never means "the default panel" (issue 11: an empty form computed every method)
        if "hx-request" not in request.headers:
            raise ApiError(422, "invalid_request", "tick at least one method")
        ctx = await run_in_threadpool(views.grid_context, request, db, user=user, case_id=case_id, target=target)
        ctx["form_error"] = "Tick at least one method: nothing was computed."
        return await run_in_threadpool(render, request, "explanations/_grid.html", ctx)  # it reads the queue
    # the form's "mean" is the API's null; no member field (a single network, or an older page): the API's default
    body = ExplainBody(methods=methods or None, target=target or None, mode=mode or "exact",  # unticked: exact
                       member=None if member in (None, "", "mean") else member)
    job_id, rows = await run_in_threadpool(_request_maps, request, db, user=user, case_id=case_id, body=body)
    if "hx-request" not in request.headers:
        return RedirectResponse(f"/cases/{case_id}#explanations", status_code=303)
    ctx = await run_in_threadpool(views.grid_context, request, db, user=user, case_id=case_id,
                                  target=rows[0].target_id, methods=[r.method for r in rows], job_id=job_id,
                                  shown=rows)
    return await run_in_threadpool(render, request, "explanations/_grid.html", ctx)


@pages.get("/cases/{case_id}/explanations/panel")
def explain_panel(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    ctx = views.grid_context(request, db, user=user, case_id=case_id)
    return render(request, "explanations/_panel.html", ctx)


@pages.get("/cases/{case_id}/explanations/grid")
def explain_grid(
    case_id: str,
    request: Request,
    user: CurrentUser,
    db: DbSession,
    target: Annotated[str | None, Query(max_length=64)] = None,
    methods: Annotated[str | None, Query(max_length=400, description="comma-separated: only these methods")] = None,
) -> Response:
    wanted = [m for m in methods.split(",") if m] if methods else None
    ctx = views.grid_context(request, db, user=user, case_id=case_id, target=target, methods=wanted)
    return render(request, "explanations/_grid.html", ctx)


@pages.get("/explanations/{explanation_id}/card")
def explain_card(explanation_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    row = service.get_explanation_for(db, explanation_id=explanation_id, user=user)
    if row is None:
        raise NotFound("explanation")
    return render(request, "explanations/_card.html", {"m": views.card(row)})


@pages.get("/jobs/{job_id}/progress")
def job_progress(job_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    job = get_job_for(db, job_id=job_id, user=user)
    if job is None:
        raise NotFound("job")
    target = db.scalar(select(Explanation.target_id).where(Explanation.job_id == job.id).limit(1))
    job_methods = ""  # polled every second while the job runs: the methods are read only once it is done
    if job.state == DONE:
        methods = db.scalars(select(Explanation.method).where(Explanation.job_id == job.id)).all()
        job_methods = ",".join(sorted(set(methods), key=lambda m: views.ORDER.get(m, len(views.ORDER))))
    return render(request, "explanations/_progress.html", {"job": job, "target": {"id": target} if target else None,
                                                           "job_methods": job_methods,
                                                           "progress": views.progress_info(db, job)})
