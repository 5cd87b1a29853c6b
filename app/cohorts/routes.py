"""Syndromes page and cohort API: per syndrome the visible confirmed cases, the composite, syndrome-wise maps."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cohorts import service, views
from app.errors import DomainError
from app.explain import render as map_render
from app.explain.registry import DEFAULT_PANEL, METHODS, require_methods
from app.jobs.registry import lane_of
from app.predictions.serving import ServedModel, require_model
from app.web.deps import CurrentUser, DbSession, client_ip
from app.web.errors import ApiError, NotFound
from app.web.jobs import submit_or_fail
from app.web.templating import render

api = APIRouter(tags=["cohorts"])
pages = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store"}  # derived from patients' pixels


class CohortBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[str] | None = Field(default=None, description="method ids; omitted = the ten-method panel")
    objective: str = Field(default="logit", description="logit (the syndrome's) or similarity (to its centroid)")


def _floor(request: Request) -> int:
    return max(service.MIN_PATIENTS, int(request.app.state.settings.cohort_min_patients))


def _group(request: Request, db: Session, user: User, syndrome_id: str) -> service.Cohort:
    model = require_model(request)
    return service.cohort(db, user=user, model=model, syndrome_id=syndrome_id, floor=_floor(request))


def _request(request: Request, db: Session, *, user: User, syndrome_id: str, body: CohortBody) -> dict[str, Any]:
    model = require_model(request)
    group = _group(request, db, user, syndrome_id)
    try:
        methods = service.check_methods(body.methods)
        objective = service.objective_key(body.objective, syndrome_id)
        row, job_id = service.request_cohort(db, user=user, model=model, group=group, objective=objective,
                                             methods=methods, data_dir=request.app.state.settings.data_dir)
    except DomainError:
        db.rollback()
        raise
    audit.record(db, action="cohort", user=user, ip=client_ip(request),
                 detail={"methods": methods, "model": model.version, "cases": len(group.cases)})
    db.commit()
    if job_id is not None and row.state == "queued" and row.job_id == job_id:
        submit_or_fail(request, job_id, lane_of(service.COHORT_JOB))
    return {"cohort": service.cohort_out(group), "result": service.result_out(row), "job_id": job_id}


@api.get("/api/v1/syndromes", summary="Every syndrome with its visible confirmed cases and the privacy floor")
def list_syndromes(request: Request, user: CurrentUser, db: DbSession, model: ServedModel) -> JSONResponse:
    groups = service.overview(db, user=user, model=model, floor=_floor(request))
    return JSONResponse([service.cohort_out(g) for g in groups], headers=NO_STORE)


@api.post("/api/v1/syndromes/{syndrome_id}/cohort", status_code=202,
          summary="Composite and syndrome-wise maps of a syndrome (a job); 422 too_few_cases below the floor")
async def create_cohort(syndrome_id: str, body: CohortBody, request: Request, user: CurrentUser,
                        db: DbSession) -> JSONResponse:
    out = await run_in_threadpool(_request, request, db, user=user, syndrome_id=syndrome_id, body=body)
    return JSONResponse(out, status_code=202, headers=NO_STORE)


@api.get("/api/v1/syndromes/{syndrome_id}/cohort", summary="The stored result for the cases you may see now")
def get_cohort(syndrome_id: str, request: Request, user: CurrentUser, db: DbSession,
               objective: Annotated[str, Query(max_length=20)] = "logit",
               methods: Annotated[str | None, Query(max_length=400)] = None) -> JSONResponse:
    model = require_model(request)
    group = _group(request, db, user, syndrome_id)
    service.require_floor(group)
    chosen = service.check_methods([m for m in (methods or "").split(",") if m] or None)
    key = service.objective_key(objective, syndrome_id)
    row = service.find_result(db, user=user, model=model, group=group, objective=key, methods=chosen)
    if row is None:
        raise NotFound("cohort result for these cases")
    return JSONResponse({"cohort": service.cohort_out(group), "result": service.result_out(row)}, headers=NO_STORE)


def _result_array(request: Request, db: Session, user: User, result_id: str, name: str) -> np.ndarray:
    row = service.get_result_for(db, user=user, result_id=result_id)
    if row is None:
        raise NotFound("cohort result")
    if row.state != "done":
        raise ApiError(409, "not_ready", f"The cohort result is {row.state}.")
    path = service.result_dir(request.app.state.settings.data_dir, row.id) / name
    if not path.is_file():
        raise NotFound("cohort map")
    return np.load(path, allow_pickle=False)


@api.get("/api/v1/cohorts/{result_id}/composite.png", response_class=Response, summary="The composite face")
def composite_png(result_id: str, request: Request, user: CurrentUser, db: DbSession,
                  kind: Annotated[str, Query(pattern="^(registered|plain)$")] = "registered") -> Response:
    image = _result_array(request, db, user, result_id, "composite.npy" if kind == "registered" else "plain.npy")
    png = map_render.encode_png(np.clip(np.round(image), 0, 255).astype(np.uint8))
    return Response(png, media_type="image/png", headers=NO_STORE)


def _method(method: str) -> str:
    return require_methods([method])[0]


@api.get("/api/v1/cohorts/{result_id}/maps/{method}.png", response_class=Response,
         summary="A syndrome-wise map on the composite (mean, agreement, or the composite's own map)")
def cohort_map_png(result_id: str, method: str, request: Request, user: CurrentUser, db: DbSession,
                   kind: Annotated[str, Query(pattern="^(mean|agreement|composite)$")] = "mean",
                   view: Annotated[str, Query(pattern="^(heat|overlay)$")] = "overlay") -> Response:
    values = _result_array(request, db, user, result_id, f"{_method(method)}.{kind}.npy")
    signed = kind != "agreement" and METHODS[method].signed
    scale = map_render.map_scale(values, signed=signed)
    if view == "heat":
        png = map_render.heat_png_crop(values, scale)
    else:
        base = np.clip(np.round(_result_array(request, db, user, result_id, "composite.npy")), 0, 255)
        png = map_render.overlay_png(base.astype(np.uint8), values, scale, opacity=0.6)
    return Response(png, media_type="image/png", headers=NO_STORE)


@api.get("/api/v1/cohorts/{result_id}/maps/{method}.npy", response_class=Response, summary="The raw float32 map")
def cohort_map_npy(result_id: str, method: str, request: Request, user: CurrentUser, db: DbSession,
                   kind: Annotated[str, Query(pattern="^(mean|agreement|composite)$")] = "mean") -> Response:
    import io

    values = _result_array(request, db, user, result_id, f"{_method(method)}.{kind}.npy")
    row = service.get_result_for(db, user=user, result_id=result_id)
    objective = row.objective.replace(":", "_") if row is not None else "map"
    buffer = io.BytesIO()
    np.save(buffer, values.astype(np.float32), allow_pickle=False)
    return Response(buffer.getvalue(), media_type="application/octet-stream", headers={
        **NO_STORE, "Content-Disposition": f'attachment; filename="{method}.{kind}.{objective}.npy"'})


# --- pages ---------------------------------------------------------------------------------------------


@pages.get("/syndromes")
def syndromes_page(request: Request, user: CurrentUser, db: DbSession, model: ServedModel) -> Response:
    groups = service.overview(db, user=user, model=model, floor=_floor(request))
    response = render(request, "cohorts/list.html", {"groups": [service.cohort_out(g) for g in groups],
                                                     "floor": _floor(request), "model_version": model.version})
    response.headers["Cache-Control"] = "no-store"
    return response


def _detail_context(request: Request, db: Session, user: User, syndrome_id: str, objective: str) -> dict[str, Any]:
    model = require_model(request)
    group = _group(request, db, user, syndrome_id)
    ctx: dict[str, Any] = {"group": service.cohort_out(group), "objective": objective, "result": None,
                           "methods": [METHODS[m] for m in DEFAULT_PANEL], "model_version": model.version}
    if group.passes:
        try:
            key = service.objective_key(objective, syndrome_id)
        except DomainError:
            key = "logit"
        row = service.find_result(db, user=user, model=model, group=group, objective=key,
                                  methods=list(DEFAULT_PANEL))
        ctx["result"] = service.result_out(row) if row is not None else None
        ctx["labels"] = {m: METHODS[m].label for m in METHODS}
        if ctx["result"] and ctx["result"]["status"] == "done":
            ctx["rows"] = views.method_rows(request.app.state.settings.data_dir, ctx["result"])
        elif ctx["result"] and ctx["result"]["status"] in ("queued", "running"):
            ctx["progress"] = views.progress(db, ctx["result"])
    return ctx


@pages.get("/syndromes/{syndrome_id}")
def syndrome_page(syndrome_id: str, request: Request, user: CurrentUser, db: DbSession,
                  objective: Annotated[str, Query(pattern="^(logit|similarity)$")] = "logit") -> Response:
    response = render(request, "cohorts/detail.html", _detail_context(request, db, user, syndrome_id, objective))
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.get("/syndromes/{syndrome_id}/result")
def syndrome_result(syndrome_id: str, request: Request, user: CurrentUser, db: DbSession,
                    objective: Annotated[str, Query(pattern="^(logit|similarity)$")] = "logit") -> Response:
    response = render(request, "cohorts/_result.html", _detail_context(request, db, user, syndrome_id, objective))
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.post("/syndromes/{syndrome_id}/cohort")
async def syndrome_compute(syndrome_id: str, request: Request, user: CurrentUser, db: DbSession,
                           objective: Annotated[str, Form(pattern="^(logit|similarity)$")] = "logit") -> Response:
    await run_in_threadpool(_request, request, db, user=user, syndrome_id=syndrome_id,
                            body=CohortBody(objective=objective))
    ctx = await run_in_threadpool(_detail_context, request, db, user, syndrome_id, objective)
    response = render(request, "cohorts/_result.html", ctx)
    response.headers["Cache-Control"] = "no-store"
    return response
