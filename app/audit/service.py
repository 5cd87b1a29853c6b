"""Writing and reading audit events. Callers commit; an event joins the transaction of what it records."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.auth.models import User

#: Detail keys that would carry health-derived values: the target syndrome of a map, a photo's digest (it
#: identifies the photo), a diagnosis, a pseudonym. Audit rows outlive an erased case and keep who did what
#: when; these values must not outlive it, so they are never written (and erasure removes old ones).
HEALTH_KEYS = frozenset({"target", "sha256", "diagnosis", "syndrome_id", "syndrome", "omim", "pseudonym"})


def _without_health(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    if detail is None:
        return None
    return {key: value for key, value in detail.items() if key not in HEALTH_KEYS}


def scrub_case(session: Session, *, case_id: str) -> int:
    """On erasure: strip health-derived values from the case's older audit rows (written before the rule
    above). The rows stay: who viewed, exported, erased the case, and when. Returns the rows changed."""
    changed = 0
    for event in session.scalars(select(AuditEvent).where(AuditEvent.case_id == case_id)):
        if event.detail and HEALTH_KEYS & set(event.detail):
            event.detail = _without_health(event.detail)
            changed += 1
    return changed


def record(
    session: Session,
    *,
    action: str,
    user: User | None,
    case_id: str | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
    username: str | None = None,
) -> AuditEvent:
    event = AuditEvent(
        action=action,
        user_id=user.id if user else None,
        username=user.username if user else username,
        case_id=case_id,
        ip=ip,
        detail=_without_health(detail),
    )
    session.add(event)
    return event


def events_for_case(session: Session, *, case_id: str, limit: int = 200) -> list[AuditEvent]:
    query = (
        select(AuditEvent)
        .where(AuditEvent.case_id == case_id)
        .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def recent_events(session: Session, *, limit: int = 200, offset: int = 0) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(query))
