"""The case page's history: everything that happened to a case, from several tables, in time order.

Each domain contributes a *source*: a function ``(session, case) -> iterable of HistoryEntry``. Built in:
audit events only. The domains above this one add theirs with ``register_history_source`` in their own
``history.py`` (predictions, explanations, diagnoses, ratings), which :mod:`app.hooks` imports, e.g.
ratings::

    from app.cases.history import HistoryEntry, register_history_source

    @register_history_source(covers=("rate",))
    def rating_entries(session, case):
        for r in ...:
            yield HistoryEntry(at=r.created_at, kind="rating", title="Map rated 4/5", user=...)

``covers`` names audit actions the source describes better; those audit events are then left out, so
one thing does not appear twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.cases.models import Case

PER_SOURCE = 200
"""At most this many rows are read from each table (the newest)."""


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    kind: str  # "upload", "prediction", "explanation", "diagnosis", "rating", "audit", ...
    title: str
    detail: str | None = None
    user: str | None = None
    url: str | None = None


HistorySource = Callable[[Session, Case], Iterable[HistoryEntry]]
F = TypeVar("F", bound=HistorySource)


@dataclass(frozen=True)
class _Registered:
    fn: HistorySource
    covers: frozenset[str]


_SOURCES: list[_Registered] = []


def register_history_source(fn: F | None = None, *, covers: Iterable[str] = ()) -> F | Callable[[F], F]:
    """Add a source of history entries; usable as ``register_history_source(fn)`` or as a decorator.

    Registering the same function twice keeps one registration (module reloads, test re-imports).
    """

    def _register(source: F) -> F:
        _SOURCES[:] = [s for s in _SOURCES if s.fn is not source]
        _SOURCES.append(_Registered(source, frozenset(covers)))
        return source

    return _register(fn) if fn is not None else _register


def history_sources() -> list[HistorySource]:
    return [s.fn for s in _SOURCES]


def case_history(session: Session, *, case: Case, limit: int = 300) -> list[HistoryEntry]:
    """Every source's entries merged, newest first."""
    covered = frozenset().union(*(s.covers for s in _SOURCES))
    entries: list[HistoryEntry] = []
    for registered in list(_SOURCES):
        entries.extend(registered.fn(session, case))
    entries.extend(audit_entries(session, case, skip=covered))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit]


# --- the built-in source: audit events (the audit domain lies below this one) -----------------------------


_AUDIT_TITLES = {
    "upload": "Photo uploaded",
    "view": "Viewed",
    "predict": "New ranking requested",
    "explain": "Attribution maps requested",
    "phenotype_add": "HPO term recorded",
    "phenotype_change": "HPO term changed",
    "phenotype_remove": "HPO term removed",
    "diagnose": "Diagnosis recorded",
    "delete": "Case erased",
}


def audit_entries(session: Session, case: Case, *, skip: frozenset[str] = frozenset()) -> Iterable[HistoryEntry]:
    """Audit events, except the actions another source covers. Repeated views by one person collapse."""
    query = (
        select(AuditEvent)
        .where(AuditEvent.case_id == case.id)
        .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(PER_SOURCE)
    )
    pending: tuple[AuditEvent, int] | None = None  # newest view of a run of views by the same user
    for event in session.scalars(query):
        if event.action in skip:
            continue
        if event.action == "view" and pending is not None and pending[0].username == event.username:
            pending = (pending[0], pending[1] + 1)
            continue
        if pending is not None:
            yield _view_entry(*pending)
            pending = None
        if event.action == "view":
            pending = (event, 1)
            continue
        yield HistoryEntry(
            at=event.created_at,
            kind="upload" if event.action == "upload" else "audit",
            title=_AUDIT_TITLES.get(event.action, event.action.replace("_", " ").capitalize()),
            detail=_summary(event),
            user=event.username,
        )
    if pending is not None:
        yield _view_entry(*pending)


def _summary(event: AuditEvent) -> str | None:
    """What the event concerns, in words, when its domain recorded them (``detail["summary"]``, e.g. the HPO term)."""
    summary = (event.detail or {}).get("summary") if isinstance(event.detail, dict) else None
    return summary if isinstance(summary, str) else None


def _view_entry(event: AuditEvent, count: int) -> HistoryEntry:
    return HistoryEntry(
        at=event.created_at,
        kind="audit",
        title="Viewed" if count == 1 else f"Viewed {count} times",
        detail=None if count == 1 else "the most recent view is shown",
        user=event.username,
    )

