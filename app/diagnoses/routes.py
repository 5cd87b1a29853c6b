"""Confirmed diagnosis of a case: JSON API and the case page's form (an HTMX partial)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases import service as case_service
from app.cases.models import Case
from app.cases.schemas import DiagnosisOut, diagnosis_out
from app.diagnoses import service
from app.diagnoses.models import Diagnosis
from app.diagnoses.views import diagnosis_context
from app.errors import DomainError
from app.predictions.serving import require_model
from app.web.deps import CurrentUser, DbSession, client_ip
from app.web.errors import ApiError
from app.web.templating import render

api = APIRouter(prefix="/api/v1/cases", tags=["diagnoses"])
pages = APIRouter(include_in_schema=False)

HX_TRIGGER = {"HX-Trigger": "case-history-changed"}


class DiagnosisIn(BaseModel):
    """Either ``syndrome_id`` (one of the served model's labels) or ``name`` with an optional ``omim``."""

    model_config = ConfigDict(extra="forbid")

    syndrome_id: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=500)
    omim: str | None = Field(default=None, max_length=32, description="123456 or OMIM:123456")


class DiagnosisRecord(BaseModel):
    id: int
    source: str  # "model_label" | "free_text" | "cleared"
    syndrome_id: str | None
    name: str | None
    omim: str | None
    model: str | None
    confirmed_by: str | None
    confirmed_at: datetime


def _record(row: Diagnosis) -> DiagnosisRecord:
    return DiagnosisRecord(
        id=row.id,
        source=row.source,
        syndrome_id=row.syndrome_id,
        name=row.name,
        omim=f"OMIM:{row.omim}" if row.omim else None,
        model=row.model,
        confirmed_by=row.confirmer.username if row.confirmer else None,
        confirmed_at=row.created_at,
    )


def _confirm(request: Request, db: Session, *, user: User, case: Case, body: DiagnosisIn) -> Diagnosis:
    """Validate and append (no row when nothing changes); audit "diagnose"; commit."""
    syndrome_id = (body.syndrome_id or "").strip()
    name = (body.name or "").strip()
    if bool(syndrome_id) == bool(name):
        raise ApiError(422, "invalid_request", "Give either syndrome_id (a label of the model) or name (with omim).")
    if syndrome_id:
        if body.omim:
            raise ApiError(422, "invalid_request", "omim comes from the model's label; send it only with a name.")
        model = require_model(request)
        row, added = service.confirm_label(
            db, case=case, user=user, labels=model.labels, model_version=model.version, syndrome_id=syndrome_id
        )
    else:
        row, added = service.confirm_free_text(db, case=case, user=user, name=name, omim=body.omim)
    if added:
        audit.record(db, action="diagnose", user=user, case_id=case.id, ip=client_ip(request),
                     # not the diagnosis itself: audit rows outlive an erased case, health data must not
                     detail={"source": row.source})
    db.commit()
    return row


def _clear(request: Request, db: Session, *, user: User, case: Case) -> None:
    if service.clear(db, case=case, user=user):
        audit.record(db, action="diagnose", user=user, case_id=case.id, ip=client_ip(request),
                     detail={"cleared": True})
    db.commit()


@api.get("/{case_id}/diagnosis", response_model=DiagnosisOut | None, summary="The confirmed diagnosis (or null)")
def get_diagnosis(case_id: str, user: CurrentUser, db: DbSession) -> DiagnosisOut | None:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return diagnosis_out(service.current_diagnosis(db, case_id=case.id))


@api.put("/{case_id}/diagnosis", response_model=DiagnosisOut, summary="Confirm or change the diagnosis")
def put_diagnosis(case_id: str, body: DiagnosisIn, request: Request, user: CurrentUser, db: DbSession) -> DiagnosisOut:
    case = case_service.get_case(db, user=user, case_id=case_id)
    out = diagnosis_out(_confirm(request, db, user=user, case=case, body=body))
    assert out is not None
    return out


@api.delete("/{case_id}/diagnosis", status_code=204, summary="Clear the diagnosis (the history keeps it)")
def delete_diagnosis(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    _clear(request, db, user=user, case=case)
    return Response(status_code=204)


@api.get("/{case_id}/diagnoses", response_model=list[DiagnosisRecord], summary="Every diagnosis change, oldest first")
def diagnosis_history(case_id: str, user: CurrentUser, db: DbSession) -> list[DiagnosisRecord]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    return [_record(row) for row in service.history(db, case_id=case.id)]


def _section(request: Request, db: Session, case: Case, *, status_code: int = 200, error: str | None = None,
             form: dict[str, str] | None = None) -> Response:
    ctx = diagnosis_context(request, db, case=case, current=service.current_diagnosis(db, case_id=case.id),
                            error=error, form=form)
    response = render(request, "cases/_diagnosis.html", ctx, status_code)
    if status_code < 400:
        response.headers.update(HX_TRIGGER)
    return response


@pages.post("/cases/{case_id}/diagnosis")
def diagnosis_form(
    case_id: str,
    request: Request,
    user: CurrentUser,
    db: DbSession,
    syndrome_id: Annotated[str | None, Form(max_length=64)] = None,
    name: Annotated[str | None, Form(max_length=500)] = None,
    omim: Annotated[str | None, Form(max_length=32)] = None,
) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    body = DiagnosisIn(syndrome_id=syndrome_id or None, name=name or None, omim=omim or None)
    try:
        _confirm(request, db, user=user, case=case, body=body)
    except DomainError as exc:
        if exc.status_code == 404:
            raise
        db.rollback()
        form = {"name": name or "", "omim": omim or "", "syndrome_id": syndrome_id or ""}
        return _section(request, db, case, status_code=exc.status_code, error=exc.detail, form=form)
    return _section(request, db, case)


@pages.delete("/cases/{case_id}/diagnosis")
def diagnosis_clear_form(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = case_service.get_case(db, user=user, case_id=case_id)
    _clear(request, db, user=user, case=case)
    return _section(request, db, case)
