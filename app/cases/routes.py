"""Cases: the JSON API of the contract and the case pages (list, new, detail)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from app.audit import service as audit
from app.cases import service
from app.cases.models import Case
from app.cases.schemas import CaseList, CaseOut, case_out
from app.cases.storage import PhotoStore
from app.predictions.models import PredictionRun
from app.predictions.service import latest_run, rank_crop, store_run
from app.predictions.serving import latest_runs, model_problem, served_model, served_version
from app.settings import Settings
from app.vision.errors import IntakeError
from app.vision.pipeline import process_photo
from app.web.deps import AppSettings, CurrentUser, DbSession, client_ip
from app.web.errors import ApiError
from app.web.templating import render

api = APIRouter(prefix="/api/v1/cases", tags=["cases"])
pages = APIRouter(include_in_schema=False)

PAGE_SIZE = 20


def _store(request: Request) -> PhotoStore:
    return request.app.state.photo_store


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    """Read the uploaded file in chunks and stop as soon as it exceeds the limit."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(1024 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"The photo is larger than {limit // (1024 * 1024)} MB.")
        chunks.append(chunk)
    return b"".join(chunks)


def _intake_error(exc: IntakeError) -> ApiError:
    return ApiError(exc.status_code, exc.code, exc.detail, **exc.extra)


@api.post("", status_code=201, response_model=CaseOut, summary="Upload a photo and create a case")
async def create_case(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    settings: AppSettings,
    photo: Annotated[UploadFile, File(description="JPEG, PNG, WebP or HEIC frontal photo")],
    pseudonym: Annotated[str | None, Form(max_length=500)] = None,
    face_index: Annotated[int | None, Form(ge=0, le=99)] = None,
) -> CaseOut:
    data = await _read_limited(photo, settings.max_upload_bytes)
    await photo.close()
    try:
        processed = await run_in_threadpool(
            process_photo,
            data,
            face_index=face_index,
            max_pixels=settings.max_pixels,
            detector=request.app.state.detector,
        )
    except IntakeError as exc:
        raise _intake_error(exc) from exc
    model = served_model(request)
    result = await run_in_threadpool(rank_crop, model, processed.aligned.crop) if model else None

    def _save() -> tuple[Case, PredictionRun | None]:
        case = service.create_case(
            db, owner=user, processed=processed, pseudonym=pseudonym, store=_store(request)
        )
        run = store_run(db, case=case, model=model, result=result) if model and result else None
        audit.record(
            db, action="upload", user=user, case_id=case.id, ip=client_ip(request),
            detail={"faces": len(processed.faces), "sha256": processed.photo.sha256},
        )
        try:
            db.commit()
        except BaseException:
            db.rollback()
            _store(request).remove_case(case.id)
            raise
        return case, run

    case, run = await run_in_threadpool(_save)
    return case_out(case, run, served_version(request))


@api.get("", response_model=CaseList, summary="List the cases you may see, newest first")
def list_cases(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    q: Annotated[str | None, Query(max_length=120)] = None,
) -> CaseList:
    items, total = service.list_cases(db, user=user, limit=limit, offset=offset, q=q)
    runs = latest_runs(db, case_ids=[c.id for c in items])
    version = served_version(request)
    return CaseList(
        items=[case_out(c, runs.get(c.id), version) for c in items], total=total, limit=limit, offset=offset
    )


@api.get("/{case_id}", response_model=CaseOut, summary="One case")
def get_case(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> CaseOut:
    case = service.get_case(db, user=user, case_id=case_id)
    audit.record(db, action="view", user=user, case_id=case.id, ip=client_ip(request), detail={"via": "api"})
    db.commit()
    return case_out(case, latest_run(db, case_id=case.id), served_version(request))


@api.delete("/{case_id}", status_code=204, summary="Erase a case, its photo and crop")
def delete_case(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = service.get_case(db, user=user, case_id=case_id)
    service.delete_case(db, case=case)
    audit.record(db, action="delete", user=user, case_id=case_id, ip=client_ip(request))
    db.commit()
    _store(request).remove_case(case_id)
    headers = {"HX-Redirect": "/cases"} if "hx-request" in request.headers else {}
    return Response(status_code=204, headers=headers)


def _file_response(request: Request, relative: str, media_type: str) -> Response:
    return Response(
        _store(request).read(relative),
        media_type=media_type,
        headers={"Cache-Control": "private, no-store", "Content-Disposition": "inline"},
    )


@api.get("/{case_id}/image", summary="The de-identified photo (JPEG)", response_class=Response)
def case_image(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = service.get_case(db, user=user, case_id=case_id)
    return _file_response(request, case.photo_path, case.photo_media_type)


@api.get("/{case_id}/aligned", summary="The aligned 112x112 crop (PNG)", response_class=Response)
def case_aligned(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = service.get_case(db, user=user, case_id=case_id)
    return _file_response(request, case.aligned_path, "image/png")


@pages.get("/")
def home(user: CurrentUser) -> Response:
    return RedirectResponse("/cases", status_code=303)


@pages.get("/cases")
def cases_page(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
    q: Annotated[str | None, Query(max_length=120)] = None,
) -> Response:
    items, total = service.list_cases(db, user=user, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, q=q)
    pages_total = max(1, -(-total // PAGE_SIZE))
    ctx = {"cases": items, "total": total, "page": page, "pages": pages_total, "q": q or ""}
    template = "cases/_rows.html" if request.headers.get("hx-target") == "case-rows" else "cases/list.html"
    return render(request, template, ctx)


@pages.get("/cases/new")
def new_case_page(request: Request, user: CurrentUser, settings: AppSettings) -> Response:
    return render(request, "cases/new.html", {"max_upload_mb": settings.max_upload_mb})


@pages.get("/cases/{case_id}")
def case_page(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = service.get_case(db, user=user, case_id=case_id)
    audit.record(db, action="view", user=user, case_id=case.id, ip=client_ip(request), detail={"via": "page"})
    db.commit()
    events = audit.events_for_case(db, case_id=case.id, limit=50)
    data = case_out(case, latest_run(db, case_id=case.id), served_version(request))
    ctx = {"case": case, "data": data, "events": events, "model_problem": model_problem(request)}
    return render(request, "cases/detail.html", ctx)


def upload_body_limit(settings: Settings) -> int:
    """Whole-request cap for the upload route: the photo limit plus room for multipart framing."""
    return settings.max_upload_bytes + 256 * 1024
