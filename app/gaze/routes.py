"""Gaze endpoints (admins: gaze data span participants and cases): participants, imports with their reports,
results (JSON, CSV, page with plots), the fixations of a case (JSON and page), and the fixations CSV."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.explain.fast import EXACT
from app.explain.registry import METHODS
from app.explanations.models import Explanation
from app.gaze import import_jobs, importer, results, results_cache, service
from app.gaze.models import GROUP_LABELS, STANDARD_GROUPS, Fixation, GazeImport, Participant
from app.gaze.plots import bars_svg
from app.jobs.models import DONE, Job
from app.web.deps import AdminUser, DbSession, client_ip
from app.web.errors import NotFound
from app.web.jobs import submit_or_fail
from app.web.templating import render

api = APIRouter(tags=["gaze"])
pages = APIRouter(include_in_schema=False)

NO_STORE = {"Cache-Control": "private, no-store"}
Angle = Annotated[float, Query(gt=0.05, le=5.0, description="σ of the fixation blur in degrees of visual angle")]
TopQ = Annotated[float, Query(gt=0.0, le=50.0, description="q for the IoU of the top-q % regions")]


class ParticipantBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(max_length=32, description="a code such as P07, never a name")
    group: str = Field(max_length=40, description=f"{', '.join(STANDARD_GROUPS)} or a lab-defined group")
    experience_years: float | None = Field(default=None, ge=0, le=80)


@api.post("/api/v1/gaze/participants", status_code=201, summary="Register a participant (code, group)")
def add_participant(body: ParticipantBody, user: AdminUser, db: DbSession) -> JSONResponse:
    row = service.add_participant(db, code=body.code, group=body.group, experience_years=body.experience_years)
    db.commit()
    return JSONResponse(service.participant_out(row), status_code=201, headers=NO_STORE)


@api.get("/api/v1/gaze/participants", summary="Participants with their fixation counts")
def list_participants(user: AdminUser, db: DbSession) -> JSONResponse:
    counts = service.fixation_counts(db)
    return JSONResponse({"items": [service.participant_out(p, counts.get(p.id, 0)) for p in service.participants(db)]},
                        headers=NO_STORE)


def _options(fmt: str | None, space: str, rect: str | None, participant: str | None, case: str | None,
             stimulus_column: str | None, group: str | None) -> service.ImportOptions:
    if space not in ("photo", "screen"):
        raise service.GazeError("invalid_space", "space is 'photo' or 'screen'.")
    return service.ImportOptions(format=fmt or None, space=space, rect=service.parse_rect(rect),
                                 participant=participant or None, case=case or None,
                                 stimulus_column=stimulus_column or "image", group=group or None)


async def _import(request: Request, db: Session, user: Any, file: UploadFile,
                  options: service.ImportOptions) -> GazeImport | Job:
    """A small file is imported here and now (the import row); a large one (import_jobs.needs_job) is sniffed,
    stored and handed to a ``gaze_import`` job (the job, committed and submitted)."""
    data = await file.read(service.MAX_FILE_BYTES + 1)
    filename = file.filename or "upload"
    if import_jobs.needs_job(data):
        return await run_in_threadpool(_start_job, request, db, user, data, filename, options)
    def _now() -> GazeImport:
        row = importer.import_fixations(db, data=data, filename=filename, options=options, user=user,
                                        ip=client_ip(request))
        db.commit()
        return row

    return await run_in_threadpool(_now)  # never the database on the event loop (app/cases/routes.py says why)


def _start_job(request: Request, db: Session, user: Any, data: bytes, filename: str,
               options: service.ImportOptions) -> Job:
    data_dir = request.app.state.settings.data_dir
    job = import_jobs.start_import(db, data=data, filename=filename, options=options, user=user,
                                   ip=client_ip(request), data_dir=data_dir)
    try:
        db.commit()
    except Exception:
        db.rollback()
        import_jobs.discard_upload(data_dir, job.payload)
        raise
    submit_or_fail(request, job.id, job.lane)  # a broker that is down fails the job; its failure hook removes the file
    return job


def _job_view(db: Session, job_id: str) -> dict[str, Any]:
    job = db.get(Job, job_id)
    if job is None or job.kind != import_jobs.KIND:
        raise NotFound("import job")
    return import_jobs.job_view(db, job)


FormText = Annotated[str | None, Form(max_length=200)]


@api.post("/api/v1/gaze/imports", status_code=201, summary="Import a fixation file (lands whole or not at all)")
async def import_file(request: Request, user: AdminUser, db: DbSession, file: Annotated[UploadFile, File()],
                      format: FormText = None, space: Annotated[str, Form(max_length=10)] = "photo",
                      rect: FormText = None, participant: FormText = None, case: FormText = None,
                      stimulus_column: FormText = None, group: FormText = None) -> JSONResponse:
    options = _options(format, space, rect, participant, case, stimulus_column, group)
    row = await _import(request, db, user, file, options)
    if isinstance(row, Job):  # a large file: 202 with the job to poll (GET the Location)
        poll = f"/api/v1/gaze/imports/jobs/{row.id}"
        view = await run_in_threadpool(import_jobs.job_view, db, row)
        return JSONResponse({"job_id": row.id, "state": row.state, "poll": poll, **view},
                            status_code=202, headers={**NO_STORE, "Location": poll})
    return JSONResponse(service.import_out(row), status_code=201, headers=NO_STORE)


@api.get("/api/v1/gaze/imports/jobs/{job_id}", summary="A large import's job: state, progress, then its import")
def import_job(job_id: str, user: AdminUser, db: DbSession) -> JSONResponse:
    return JSONResponse(_job_view(db, job_id), headers=NO_STORE)


@api.get("/api/v1/gaze/imports", summary="Imports with their reports")
def list_imports(user: AdminUser, db: DbSession) -> JSONResponse:
    return JSONResponse({"items": [service.import_out(r) for r in service.imports(db)]}, headers=NO_STORE)


def _result(request: Request, db: Session, study: str | None, angle: float, q: float) -> dict[str, Any]:
    selection = results.Selection(study_id=study, angle_deg=angle, q=q)
    return results_cache.cached_results(db, store=request.app.state.photo_store, selection=selection)


@api.get("/api/v1/gaze/results", summary="Maps vs gaze, group vs group, ceiling: per case and pooled with CIs")
def gaze_results(request: Request, user: AdminUser, db: DbSession, study: Annotated[str | None, Query(
        max_length=32)] = None, angle: Angle = 1.0, q: TopQ = 10.0) -> JSONResponse:
    return JSONResponse(_result(request, db, study, angle, q), headers=NO_STORE)


@api.get("/api/v1/gaze/results.csv", summary="Every number of the results as CSV")
def gaze_results_csv(request: Request, user: AdminUser, db: DbSession, study: Annotated[str | None, Query(
        max_length=32)] = None, angle: Angle = 1.0, q: TopQ = 10.0) -> Response:
    text = results.results_csv(_result(request, db, study, angle, q))
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        **NO_STORE, "Content-Disposition": 'attachment; filename="gaze-results.csv"'})


@api.get("/api/v1/gaze/fixations.csv", summary="Every fixation (photo and aligned coordinates) as CSV")
def fixations_csv(user: AdminUser, db: DbSession,
                  study: Annotated[str | None, Query(max_length=32)] = None) -> Response:
    return Response(results.fixations_csv(db, study_id=study), media_type="text/csv; charset=utf-8", headers={
        **NO_STORE, "Content-Disposition": 'attachment; filename="fixations.csv"'})


#: Fixations drawn per page of a case's gaze page (a 250,000-row import made a 50 MB page that took 35 s).
PAGE_SIZE = 2000


def case_fixations(db: Session, case_id: str, *, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
    query = (select(Fixation, Participant.code, Participant.group)
             .join(Participant, Participant.id == Fixation.participant_id)
             .where(Fixation.case_id == case_id)
             .order_by(Participant.code, Fixation.import_id, Fixation.seq, Fixation.id))
    rows = db.execute(query.offset(offset).limit(limit) if limit is not None else query.offset(offset))
    return [{"participant": code, "group": group, "seq": f.seq, "x": round(f.photo_x, 2), "y": round(f.photo_y, 2),
             "aligned_x": round(f.aligned_x, 3), "aligned_y": round(f.aligned_y, 3), "duration_ms": f.duration_ms}
            for f, code, group in rows]


@api.get("/api/v1/gaze/cases/{case_id}/fixations", summary="A case's fixations in photo and aligned pixels")
def fixations_of_case(case_id: str, user: AdminUser, db: DbSession,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
                      offset: Annotated[int, Query(ge=0)] = 0) -> JSONResponse:
    if db.get(Case, case_id) is None:
        raise NotFound("case")
    total = db.scalar(select(func.count()).select_from(Fixation).where(Fixation.case_id == case_id)) or 0
    return JSONResponse({"items": case_fixations(db, case_id, limit=limit, offset=offset), "total": total,
                         "limit": limit, "offset": offset}, headers=NO_STORE)


@api.get("/api/v1/gaze/cases/{case_id}/density.png", response_class=Response,
         summary="A case's fixation density (a group's, a participant's or everyone's) on the aligned crop")
def density_png(case_id: str, request: Request, user: AdminUser, db: DbSession,
                group: Annotated[str | None, Query(max_length=40)] = None,
                participant: Annotated[str | None, Query(max_length=32)] = None,
                study: Annotated[str | None, Query(max_length=32)] = None, angle: Angle = 1.0) -> Response:
    from app.evaluate.gaze_maps import density_map
    from app.explain.render import map_scale, overlay_png
    from app.predictions.service import decode_png

    case = db.get(Case, case_id)
    if case is None:
        raise NotFound("case")
    table, _ = results.gaze_table(db, selection=results.Selection(study_id=study, angle_deg=angle))
    mask = table.case == case_id
    if group:
        mask &= table.group == group
    if participant:
        mask &= table.participant == participant
    if not mask.any():
        raise NotFound("fixations of this case")
    density = density_map(table.select(mask), sigma=table.case_sigma(case_id)).astype("float32")
    crop = decode_png(request.app.state.photo_store.read(case.aligned_path))
    png = overlay_png(crop, density, map_scale(density, signed=False), opacity=0.65)
    return Response(png, media_type="image/png", headers=NO_STORE)


# --- pages ------------------------------------------------------------------------------------------------


def _page_context(request: Request, db: Session, study: str | None, angle: float, q: float) -> dict[str, Any]:
    result = _result(request, db, study, angle, q)
    plots = {}
    for metric in results.METRIC_LABELS:
        plots[metric] = bars_svg(result, metric=metric, group_labels=GROUP_LABELS)
    counts = service.fixation_counts(db)
    return {"result": result, "plots": plots, "labels": results.METRIC_LABELS, "group_labels": GROUP_LABELS,
            "participants": [(p, counts.get(p.id, 0)) for p in service.participants(db)],
            "imports": service.imports(db)[:50], "groups": STANDARD_GROUPS, "study": study, "angle": angle, "q": q,
            "import_jobs": [import_jobs.job_view(db, job) for job in import_jobs.pending_jobs(db)],
            "job_lines": import_jobs.JOB_LINES, "job_mib": import_jobs.JOB_BYTES // 2**20,
            "cases": _case_links(db, {row["case"] for row in result["per_case"]})}


def _case_links(db: Session, case_ids: set[str]) -> list[dict[str, str]]:
    """The gaze cases by pseudonym (how people know them), the short id only where a case has none."""
    rows = db.execute(select(Case.id, Case.pseudonym).where(Case.id.in_(sorted(case_ids)))).all()
    links = [{"id": cid, "label": pseudonym or f"case {cid[:8]}"} for cid, pseudonym in rows]
    return sorted(links, key=lambda link: link["label"].lower())


@pages.get("/gaze")
def gaze_page(request: Request, user: AdminUser, db: DbSession,
              study: Annotated[str | None, Query(max_length=32)] = None, angle: Angle = 1.0,
              q: TopQ = 10.0) -> Response:
    response = render(request, "gaze/results.html", _page_context(request, db, study, angle, q))
    response.headers["Cache-Control"] = "private, no-store"
    return response


@pages.post("/gaze/imports")
async def import_page(request: Request, user: AdminUser, db: DbSession, file: Annotated[UploadFile, File()],
                      format: FormText = None, space: Annotated[str, Form(max_length=10)] = "photo",
                      rect: FormText = None, participant: FormText = None, case: FormText = None,
                      stimulus_column: FormText = None, group: FormText = None) -> Response:
    try:
        options = _options(format, space, rect, participant, case, stimulus_column, group)
        row = await _import(request, db, user, file, options)
        if isinstance(row, Job):  # a large file: its progress, polling until the job ends
            view = await run_in_threadpool(import_jobs.job_view, db, row)
            response = await run_in_threadpool(render, request, "gaze/_import_started.html", {"view": view}, 202)
            response.headers["Cache-Control"] = "private, no-store"
            return response
        context = {"ok": True, "report": row.report, "detail": f"Imported {row.fixations} fixations."}
        status = 201
    except service.GazeError as exc:
        db.rollback()
        context = {"ok": False, "report": exc.report or {}, "detail": exc.detail, "code": exc.code}
        status = exc.status_code
    response = render(request, "gaze/_report.html", context, status_code=status)
    response.headers["Cache-Control"] = "private, no-store"
    return response


@pages.get("/gaze/imports/jobs/{job_id}")
def import_job_page(job_id: str, request: Request, user: AdminUser, db: DbSession) -> Response:
    """A large import's progress fragment (polled every second while the job is queued or running)."""
    response = render(request, "gaze/_import_job.html", {"view": _job_view(db, job_id)})
    response.headers["Cache-Control"] = "private, no-store"
    return response


@pages.get("/gaze/cases/{case_id}")
def case_page(request: Request, case_id: str, user: AdminUser, db: DbSession,
              page: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> Response:
    case = db.get(Case, case_id)
    if case is None:
        raise NotFound("case")
    maps = db.scalars(select(Explanation).where(Explanation.case_id == case_id, Explanation.state == DONE,
                                                Explanation.mode == EXACT)  # the maps the results compare
                      .order_by(Explanation.created_at.desc()))
    newest: dict[str, Explanation] = {}
    for row in maps:
        newest.setdefault(row.method, row)
    total = db.scalar(select(func.count()).select_from(Fixation).where(Fixation.case_id == case_id)) or 0
    pages_total = max(1, -(-total // PAGE_SIZE))
    page = min(page, pages_total)
    fixations = case_fixations(db, case_id, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    everyone = db.execute(select(Participant.code, Participant.group).distinct()
                          .join(Fixation, Fixation.participant_id == Participant.id)
                          .where(Fixation.case_id == case_id)).all()
    people = sorted({code for code, _ in everyone})
    groups = sorted({group for _, group in everyone})
    response = render(request, "gaze/case.html", {
        "case": case, "fixations": fixations, "people": people, "groups": groups, "group_labels": GROUP_LABELS,
        "total": total, "page": page, "pages": pages_total, "page_size": PAGE_SIZE,
        "maps": [(METHODS[m].label if m in METHODS else m, row) for m, row in newest.items()]})
    response.headers["Cache-Control"] = "private, no-store"
    return response
