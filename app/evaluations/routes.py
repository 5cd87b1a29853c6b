"""Evaluation API and page: a scorecard per model version, computed as a job, recomputed when asked.

Scorecards describe synthetic benchmark faces, never patients, so any signed-in user may read them; asking
for a (re)computation, which costs minutes of CPU, is for admins. Only the served model can be evaluated
(the workers serve it), so another model id answers 404 ``unknown_model``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from app.evaluate.command import EvaluationSpec
from app.evaluations import service
from app.evaluations.models import Evaluation
from app.jobs.models import DONE, QUEUED, RUNNING, Job
from app.nets.registry import LoadedModel
from app.predictions.serving import ServedModel, require_model
from app.web.deps import AdminUser, CurrentUser, DbSession
from app.web.errors import ApiError
from app.web.jobs import submit_or_fail
from app.web.templating import render

api = APIRouter(tags=["evaluations"])
pages = APIRouter(include_in_schema=False)

FIGURES = ("localisation.png", "deletion.png", "deletion_signed.png", "insertion.png", "road.png", "context.png",
           "sanity.png")


class EvaluateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[str] | None = Field(default=None, max_length=20)
    per_class: int | None = Field(default=None, ge=1, le=50)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    classes: list[str] | None = Field(default=None, max_length=20)
    tolerance_px: int | None = Field(default=None, ge=0, le=56)
    road_percentages: list[float] | None = Field(default=None, max_length=9)
    sanity_faces: int | None = Field(default=None, ge=0, le=50)
    ig_tolerance: float | None = Field(default=None, ge=0, le=1)
    seeds: int | None = Field(default=None, ge=1, le=10)
    robustness_samples: int | None = Field(default=None, ge=0, le=20)
    recompute: bool = False


def _served(request: Request, model_id: str) -> LoadedModel:
    model = require_model(request)
    if model.card.id != model_id:
        raise ApiError(404, "unknown_model", f"Model {model_id[:64]!r} is not the served model ({model.card.id}); "
                       "only the served model can be evaluated.")
    return model


def _spec(body: EvaluateBody) -> EvaluationSpec:
    given = body.model_dump(exclude_none=True, exclude={"recompute"})
    try:
        return EvaluationSpec.from_dict(given).resolved()
    except (ValueError, TypeError) as exc:
        raise ApiError(422, "invalid_params", str(exc)) from exc


def _ask(request: Request, db: Session, *, user: Any, model: LoadedModel, spec: EvaluationSpec,
         recompute: bool) -> tuple[Evaluation, Job | None]:
    row, job = service.request_evaluation(db, user=user, model=model, spec=spec, recompute=recompute)
    db.commit()
    if job is not None:
        submit_or_fail(request, job.id, job.lane)
        db.refresh(row)
    return row, job


@api.post("/api/v1/models/{model_id}/evaluations", status_code=202, summary="Evaluate the explanation methods")
async def create_evaluation(model_id: str, body: EvaluateBody, request: Request, user: AdminUser,
                            db: DbSession) -> JSONResponse:
    model = _served(request, model_id)
    spec = _spec(body)
    row, job = await run_in_threadpool(_ask, request, db, user=user, model=model, spec=spec, recompute=body.recompute)
    return JSONResponse({"job_id": job.id if job else None, "evaluation": service.evaluation_out(row)},
                        status_code=202)


@api.get("/api/v1/models/{model_id}/evaluations", summary="Evaluation runs of a model (newest first)")
def list_evaluations(model_id: str, user: CurrentUser, db: DbSession,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    return {"items": [service.evaluation_out(r) for r in service.runs_for(db, model_id=model_id[:64], limit=limit)]}


def _row(db: Session, evaluation_id: str) -> Evaluation:
    row = db.get(Evaluation, evaluation_id[:32])
    if row is None:
        raise ApiError(404, "not_found", "No such evaluation.")
    return row


@api.get("/api/v1/evaluations/{evaluation_id}", summary="One evaluation run with its scorecard")
def get_evaluation(evaluation_id: str, user: CurrentUser, db: DbSession) -> dict[str, Any]:
    return service.evaluation_out(_row(db, evaluation_id), result=True)


@lru_cache(maxsize=32)
def _figures(evaluation_id: str, finished: str) -> dict[str, bytes]:
    return {}


@api.get("/api/v1/evaluations/{evaluation_id}/figures/{name}", summary="A scorecard plot (PNG)",
         response_class=Response)
def evaluation_figure(evaluation_id: str, name: str, user: CurrentUser, db: DbSession) -> Response:
    row = _row(db, evaluation_id)
    if name not in FIGURES:
        raise ApiError(404, "not_found", f"No figure {name[:40]!r}; known: {', '.join(FIGURES)}.")
    if row.state != DONE or not row.result:
        raise ApiError(409, "not_ready", "The evaluation has not finished.")
    cache = _figures(row.id, str(row.finished_at))
    if not cache:
        from app.evaluate.report import scorecard_figures

        cache.update(scorecard_figures(row.result))
    if name not in cache:
        raise ApiError(404, "not_found", f"This scorecard has no {name}.")
    return Response(cache[name], media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _page_context(db: Session, model: LoadedModel, run: str | None) -> dict[str, Any]:
    shown = db.get(Evaluation, run[:32]) if run else None
    if shown is not None and shown.model_id != model.card.id:
        shown = None
    done = shown if shown is not None and shown.state == DONE else service.newest(db, model=model)
    pending = shown if shown is not None and shown.state in (QUEUED, RUNNING) else service.newest(
        db, model=model, states=(QUEUED, RUNNING))
    job = db.get(Job, pending.job_id) if pending is not None and pending.job_id else None
    from app.evaluate.scorecard import FORMAT

    # a scorecard of an older format lacks today's columns and verdicts: the page offers a recompute instead
    card = done.result if done is not None and (done.result or {}).get("format") == FORMAT else None
    runs = service.runs_for(db, model_id=model.card.id, limit=10)
    return {"model": model, "run": done if card else None, "card": card, "pending": pending, "job": job,
            "runs": runs, "run_states": _run_states(db, runs), "figures": FIGURES,
            "expected": service.expected_duration(service.DEFAULT_SPEC)}


def _run_states(db: Session, runs: list[Evaluation]) -> dict[str, str]:
    """A run's state as its job knows it while it is unfinished: the row says "queued" until the job ends,
    while the job (and its progress bar) already runs (issue 24.11)."""
    states = {}
    for row in runs:
        job = db.get(Job, row.job_id) if row.state in (QUEUED, RUNNING) and row.job_id else None
        states[row.id] = job.state if job is not None else row.state
    return states


@pages.get("/evaluation")
def served_evaluation(user: CurrentUser, model: ServedModel) -> Response:
    """The navigation's entry: the served model's Evaluation page."""
    return RedirectResponse(f"/models/{model.card.id}/evaluation", status_code=303)


@pages.get("/models/{model_id}/evaluation")
def evaluation_page(model_id: str, request: Request, user: CurrentUser, db: DbSession,
                    run: Annotated[str | None, Query(max_length=32)] = None) -> Response:
    model = _served(request, model_id)
    return render(request, "evaluations/page.html", _page_context(db, model, run))


@pages.get("/models/{model_id}/evaluation/progress")
def evaluation_progress(model_id: str, request: Request, user: CurrentUser, db: DbSession,
                        run: Annotated[str, Query(max_length=32)]) -> Response:
    model = _served(request, model_id)
    ctx = _page_context(db, model, run)
    response = render(request, "evaluations/_progress.html", ctx)
    if ctx["pending"] is None:
        response.headers["HX-Refresh"] = "true"  # finished (or failed): reload the page with the new scorecard
    return response


@pages.post("/models/{model_id}/evaluation")
def evaluation_recompute(model_id: str, request: Request, user: AdminUser, db: DbSession,
                         recompute: Annotated[str, Form()] = "") -> Response:
    model = _served(request, model_id)
    row, _job = _ask(request, db, user=user, model=model, spec=service.DEFAULT_SPEC.resolved(),
                     recompute=recompute == "1")
    target = f"/models/{model_id}/evaluation?run={row.id}"
    if "hx-request" in request.headers:
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)
