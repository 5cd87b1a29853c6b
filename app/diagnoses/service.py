"""Confirming, changing and clearing a case's diagnosis; reading the current one and the history.

Every change appends a row (the table is the history). The newest row is the current diagnosis; a
``cleared`` row means there is none. Its values are copied onto the case (``cases.diagnosis_*``), which
the case list filters on. Callers commit (and record the audit event in the same transaction).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.diagnoses.models import CLEARED, FREE_TEXT, MODEL_LABEL, Diagnosis
from app.errors import DomainError
from app.nets.card import Label
from app.text import has_controls

MAX_NAME = 200
_OMIM = re.compile(r"(?:omim\s*:?\s*)?([0-9]{6})", re.IGNORECASE)


def normalise_omim(value: str | None) -> str | None:
    """Six digits from ``"123456"`` or ``"OMIM:123456"`` (case and spaces forgiven); empty means none.

    Anything else is refused: a mistyped OMIM id on a confirmed diagnosis would silently group the case
    with the wrong syndrome later (composites are built from confirmed cases).
    """
    if value is None or not value.strip():
        return None
    match = _OMIM.fullmatch(value.strip())
    if match is None:
        raise DomainError("invalid_omim", "An OMIM id is six digits, optionally prefixed 'OMIM:' (OMIM:194050).")
    return match.group(1)


def clean_name(value: str | None) -> str:
    """Runs of white space become one space; a control character is refused, never replaced (app.text)."""
    if value and has_controls(value):
        raise DomainError("invalid_request", "Invalid request: the syndrome name must not contain NUL, line "
                          "breaks or other control characters.")
    cleaned = " ".join((value or "").split())
    if not cleaned:
        raise DomainError("invalid_name", "Enter the name of the diagnosed syndrome.")
    if len(cleaned) > MAX_NAME:
        raise DomainError("invalid_name", f"The syndrome name is longer than {MAX_NAME} characters.")
    return cleaned


def _label_omim(label: Label) -> str | None:
    try:
        return normalise_omim(label.omim)
    except DomainError:
        return None


def find_label(labels: Sequence[Label], syndrome_id: str) -> Label:
    for label in labels:
        if label.id == syndrome_id:
            return label
    raise DomainError("unknown_syndrome", f"The served model has no syndrome with id {syndrome_id[:64]!r}.")


def latest_row(session: Session, *, case_id: str) -> Diagnosis | None:
    query = (
        select(Diagnosis)
        .where(Diagnosis.case_id == case_id)
        .order_by(Diagnosis.created_at.desc(), Diagnosis.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def current_diagnosis(session: Session, *, case_id: str) -> Diagnosis | None:
    """The confirmed diagnosis now, or None (never confirmed, or cleared)."""
    row = latest_row(session, case_id=case_id)
    return None if row is None or row.is_cleared else row


def current_diagnoses(session: Session, *, case_ids: Iterable[str]) -> dict[str, Diagnosis]:
    """Current diagnosis per case for a page of cases, in one query (no N+1 on the case list)."""
    ids = list(case_ids)
    if not ids:
        return {}
    newest = select(func.max(Diagnosis.id)).where(Diagnosis.case_id.in_(ids)).group_by(Diagnosis.case_id)
    rows = session.scalars(select(Diagnosis).where(Diagnosis.id.in_(newest)))
    return {row.case_id: row for row in rows if not row.is_cleared}


def history(session: Session, *, case_id: str) -> list[Diagnosis]:
    """Every row of the case, oldest first."""
    query = select(Diagnosis).where(Diagnosis.case_id == case_id).order_by(Diagnosis.created_at, Diagnosis.id)
    return list(session.scalars(query))


def _same(row: Diagnosis | None, values: dict[str, Any]) -> bool:
    return row is not None and all(getattr(row, key) == value for key, value in values.items())


def _append(session: Session, *, case: Case, user: User, values: dict[str, Any]) -> tuple[Diagnosis | None, bool]:
    """Append a row unless it would repeat the current state. Returns (current row, whether one was added)."""
    latest = latest_row(session, case_id=case.id)
    if _same(latest, values) or (latest is None and values["source"] == CLEARED):
        return (None if latest is None or latest.is_cleared else latest), False
    row = Diagnosis(case_id=case.id, confirmed_by=user.id, **values)
    session.add(row)
    case.diagnosis_syndrome_id = values["syndrome_id"]
    case.diagnosis_omim = values["omim"]
    case.diagnosis_name = values["name"]
    session.flush()
    return (None if row.is_cleared else row), True


def confirm_label(
    session: Session, *, case: Case, user: User, labels: Sequence[Label], model_version: str, syndrome_id: str
) -> tuple[Diagnosis, bool]:
    """Confirm one of the served model's syndromes (name and OMIM id come from its label)."""
    label = find_label(labels, syndrome_id)
    values = {"source": MODEL_LABEL, "syndrome_id": label.id, "name": label.name[:MAX_NAME],
              "omim": _label_omim(label), "model": model_version}
    row, added = _append(session, case=case, user=user, values=values)
    assert row is not None
    return row, added


def confirm_free_text(
    session: Session, *, case: Case, user: User, name: str | None, omim: str | None
) -> tuple[Diagnosis, bool]:
    """Confirm a syndrome by name, with its OMIM id when it has one."""
    values = {"source": FREE_TEXT, "syndrome_id": None, "name": clean_name(name), "omim": normalise_omim(omim),
              "model": None}
    row, added = _append(session, case=case, user=user, values=values)
    assert row is not None
    return row, added


def clear(session: Session, *, case: Case, user: User) -> bool:
    """Withdraw the confirmed diagnosis: appends a ``cleared`` row (nothing when there is none)."""
    values = {"source": CLEARED, "syndrome_id": None, "name": None, "omim": None, "model": None}
    _, added = _append(session, case=case, user=user, values=values)
    return added
