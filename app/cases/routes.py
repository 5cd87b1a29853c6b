"""Cases: the JSON API of the contract and the case pages (list, new, detail)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from app.audit import service as audit
from app.cases import service
from app.cases.history import case_history
from app.cases.schemas import CaseList, CaseOut, case_out
from app.cases.service import CaseFilters
from app.cases.storage import PhotoStore
from app.diagnoses.service import current_diagnoses, current_diagnosis
from app.diagnoses.views import diagnosis_context
from app.phenotypes.ranking import case_rankings
from app.phenotypes.service import terms_for_cases
from app.predictions.service import latest_run, latest_runs, out_of_range_for, rank_crop, references_for, store_run
from app.predictions.serving import model_problem, served_model, served_version
from app.settings import Settings
from app.studies.access import case_in_study
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


@api.post("", status_code=201, response_model=CaseOut, summary="Upload a photo and create a case")
async def create_case(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    settings: AppSettings,
    photo: Annotated[UploadFile, File(description="JPEG, PNG, WebP, HEIC, BMP or TIFF frontal photo")],
    pseudonym: Annotated[str | None, Form(max_length=500)] = None,
    face_index: Annotated[int | None, Form(ge=0, le=99)] = None,
) -> CaseOut:
    if problem := service.pseudonym_problem(pseudonym):
        raise ApiError(422, "invalid_request", f"Invalid request: {problem}.")
    data = await _read_limited(photo, settings.max_upload_bytes)
    await photo.close()
    processed = await run_in_threadpool(  # an IntakeError is a DomainError: the handler answers it
        process_photo,
        data,
        face_index=face_index,
        max_pixels=settings.max_pixels,
        detector=request.app.state.detector,
    )
    # Off the loop: the first request after start-up may wait for the model's load (most of a minute with a
    # large gallery), and the loop would serve nobody meanwhile.
    model = await run_in_threadpool(served_model, request)
    references = await run_in_threadpool(references_for, db, model) if model else None  # shared cases
    result = await run_in_threadpool(rank_crop, model, processed.aligned.crop, references=references) \
        if model else None

    def _save() -> CaseOut:
        case = service.create_case(
            db, owner=user, processed=processed, pseudonym=pseudonym, store=_store(request)
        )
        run = store_run(db, case=case, model=model, result=result) if model and result else None
        audit.record(
            db, action="upload", user=user, case_id=case.id, ip=client_ip(request),
            detail={"faces": len(processed.faces)},  # no photo digest: audit rows outlive an erasure
        )
        try:
            db.commit()
        except BaseException:
            db.rollback()
            _store(request).remove_case(case.id)
            raise
        # Here, not on the event loop: it reads the database, and a loop thread waiting for a pooled connection
        # while 20 uploads held them all (each waiting for the loop) hung the server (bench_load, cookie uploads).
        return case_out(case, run, served_version(request))

    return await run_in_threadpool(_save)


def _parse_day(name: str, value: str | None) -> date | None:
    if value is None or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise ApiError(422, "invalid_request", f"Invalid request: {name}: expected a date as YYYY-MM-DD.") from exc


_RATED = {"true": True, "1": True, "yes": True, "rated": True, "false": False, "0": False, "no": False,
          "unrated": False}


def _hpo_id(text: str | None) -> str | None:
    """An HPO id as typed, or the best match of a name or synonym, as the case page's term search resolves it
    (issue 24.11: "wide-set eyes" found Hypertelorism there and nothing in the case list)."""
    text = (text or "").strip()
    if not text:
        return None
    if re.fullmatch(r"(?i)(HP:)?[0-9]{7}", text):
        return text.upper()
    from app.phenotypes.ontology import ontology  # the shipped HPO, parsed once

    hits = ontology().search(text, 1)
    if not hits:
        raise ApiError(422, "unknown_hpo_term", f"No term of the Human Phenotype Ontology matches {text[:60]!r}.")
    return str(hits[0]["id"])


def case_filters(
    q: Annotated[str | None, Query(max_length=120, description="pseudonym (substring) or case id (prefix)")] = None,
    created_from: Annotated[str | None, Query(max_length=10, description="first day, YYYY-MM-DD (UTC)")] = None,
    created_to: Annotated[str | None, Query(max_length=10, description="last day, YYYY-MM-DD (UTC), inclusive")] = None,
    predicted: Annotated[str | None, Query(max_length=64, description="top-1 syndrome id, newest ranking")] = None,
    diagnosis: Annotated[
        str | None, Query(max_length=64, description='"any", "none", a syndrome id or an OMIM id (OMIM:123456)')
    ] = None,
    rated: Annotated[str | None, Query(max_length=8, description="true: a map of it is rated")] = None,
    owner: Annotated[str | None, Query(max_length=64, description="owner's username (administrators)")] = None,
    hpo: Annotated[str | None, Query(max_length=120, description="an HPO term the case has: its id (HP:0000316), "
                                     "name or synonym (wide-set eyes)")] = None,
    sort: Annotated[Literal["created", "pseudonym", "predicted"], Query()] = "created",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> CaseFilters:
    """The case list's filters, shared by the API and the page (empty values mean "not filtered")."""
    rated_value = (rated or "").strip().lower()
    if rated_value and rated_value not in _RATED:
        raise ApiError(422, "invalid_request", "Invalid request: rated: expected true or false.")
    return CaseFilters(
        q=(q or "").strip() or None,
        created_from=_parse_day("created_from", created_from),
        created_to=_parse_day("created_to", created_to),
        predicted=(predicted or "").strip() or None,
        diagnosis=(diagnosis or "").strip() or None,
        rated=_RATED[rated_value] if rated_value else None,
        owner=(owner or "").strip() or None,
        hpo=_hpo_id(hpo),
        sort=sort,
        order=order,
    )


Filters = Annotated[CaseFilters, Depends(case_filters)]


@api.get("", response_model=CaseList, summary="List the cases you may see: search, filter, sort (newest first)")
def list_cases(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    filters: Filters,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> CaseList:
    items, total = service.list_cases(db, user=user, limit=limit, offset=offset, filters=filters)
    ids = [c.id for c in items]
    runs = latest_runs(db, case_ids=ids)
    diagnoses = current_diagnoses(db, case_ids=ids)
    phenotypes = terms_for_cases(db, case_ids=ids)
    version = served_version(request)
    return CaseList(
        items=[case_out(c, runs.get(c.id), version, diagnoses.get(c.id), phenotypes.get(c.id, [])) for c in items],
        total=total,
        limit=limit,
        offset=offset,
    )


@api.get("/{case_id}", response_model=CaseOut, summary="One case")
def get_case(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> CaseOut:
    case = service.get_case(db, user=user, case_id=case_id)
    audit.record(db, action="view", user=user, case_id=case.id, ip=client_ip(request), detail={"via": "api"})
    db.commit()
    run = latest_run(db, case_id=case.id)
    data = case_out(case, run, served_version(request))
    data.phenotype_ranking = case_rankings(db, case=case, run=run, model=served_model(request))  # issue 23
    return data


@api.delete("/{case_id}", status_code=204, summary="Erase a case, its photo and crop")
def delete_case(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = service.get_case(db, user=user, case_id=case_id)
    # a registered guard may refuse (case_in_study, app.studies.hooks): ErasureRefused is a DomainError (409)
    removal = service.delete_case(db, case=case, store=_store(request), data_dir=request.app.state.settings.data_dir)
    audit.record(db, action="delete", user=user, case_id=case_id, ip=client_ip(request))
    db.commit()
    removal.finish()  # the case's folder and every file the domains derived from it, now that the rows are gone
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


def _filter_query_string(filters: CaseFilters) -> str:
    """The filters as URL parameters (defaults left out), for the pager and the address bar."""
    params = {
        "q": filters.q,
        "created_from": filters.created_from.isoformat() if filters.created_from else None,
        "created_to": filters.created_to.isoformat() if filters.created_to else None,
        "predicted": filters.predicted,
        "diagnosis": filters.diagnosis,
        "rated": None if filters.rated is None else str(filters.rated).lower(),
        "owner": filters.owner,
        "hpo": filters.hpo,
        "sort": None if filters.sort == "created" else filters.sort,
        "order": None if filters.order == "desc" else filters.order,
    }
    return urlencode({k: v for k, v in params.items() if v})


@pages.get("/cases")
def cases_page(
    request: Request,
    user: CurrentUser,
    db: DbSession,
    filters: Filters,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    items, total = service.list_cases(db, user=user, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, filters=filters)
    pages_total = max(1, -(-total // PAGE_SIZE))
    ctx: dict[str, object] = {
        "cases": items, "total": total, "page": page, "pages": pages_total, "q": filters.q or "",
        "filters": filters, "query_string": _filter_query_string(filters),
        "ood": out_of_range_for(db, case_ids=[c.id for c in items]),  # flagged faces carry their warning here too
    }
    if request.headers.get("hx-target") == "case-rows":
        return render(request, "cases/_rows.html", ctx)
    model = served_model(request)
    ctx.update(
        labels=list(model.labels) if model else [],
        free_diagnoses=service.free_text_diagnoses(db, user=user),
        owners=service.owner_names(db) if user.is_admin else [],
    )
    return render(request, "cases/list.html", ctx)


@pages.get("/cases/new")
def new_case_page(request: Request, user: CurrentUser, settings: AppSettings) -> Response:
    return render(request, "cases/new.html", {"max_upload_mb": settings.max_upload_mb})


@pages.get("/cases/{case_id}")
def case_page(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = service.get_case(db, user=user, case_id=case_id)
    audit.record(db, action="view", user=user, case_id=case.id, ip=client_ip(request), detail={"via": "page"})
    db.commit()
    diagnosis = current_diagnosis(db, case_id=case.id)
    data = case_out(case, latest_run(db, case_id=case.id), served_version(request), diagnosis)
    ctx = {
        "case": case,
        "data": data,
        "history": case_history(db, case=case),
        "model_problem": model_problem(request),
        "in_study": case_in_study(db, case.id),  # then erasure is refused: say so before, not after, confirming
        **diagnosis_context(request, db, case=case, current=diagnosis),
    }
    return render(request, "cases/detail.html", ctx)


@pages.get("/cases/{case_id}/history")
def case_history_partial(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    """The History section alone (refreshed after a change on the page)."""
    case = service.get_case(db, user=user, case_id=case_id)
    return render(request, "cases/_history.html", {"case": case, "history": case_history(db, case=case)})


def upload_body_limit(settings: Settings) -> int:
    """Whole-request cap for the upload route: the photo limit plus room for multipart framing."""
    return settings.max_upload_bytes + 256 * 1024
