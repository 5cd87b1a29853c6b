"""What the case page's diagnosis section needs (shared by the case page and the diagnosis form routes)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.diagnoses import service
from app.diagnoses.models import Diagnosis
from app.predictions.serving import served_model


def diagnosis_context(
    request: Request,
    db: Session,
    *,
    case: Case,
    current: Diagnosis | None,
    error: str | None = None,
    form: dict[str, str] | None = None,
) -> dict[str, Any]:
    model = served_model(request)
    return {
        "case": case,
        "diagnosis": current,
        "diagnosis_changes": len(service.history(db, case_id=case.id)),
        "diagnosis_labels": sorted(model.labels, key=lambda label: label.name.lower()) if model else [],
        "diagnosis_model": model.version if model else None,
        "diagnosis_error": error,
        "diagnosis_form": form or {},
    }
