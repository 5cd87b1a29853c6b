"""The case page's history: everything that happened to a case, from several tables, in time order.

Each domain contributes a *source*: a function ``(session, case) -> iterable of HistoryEntry``. Built in:
prediction runs, explanation runs (the rows of one job form one entry), confirmed diagnoses and audit
events. Other domains add theirs with ``register_history_source`` at import time, e.g. ratings::

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
from app.auth.models import User
from app.cases.models import Case, top1
from app.diagnoses.models import Diagnosis
from app.explanations.models import Explanation
from app.predictions.models import PredictionRun

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


# --- built-in sources -------------------------------------------------------------------------------------


def prediction_entries(session: Session, case: Case) -> Iterable[HistoryEntry]:
    query = (
        select(PredictionRun)
        .where(PredictionRun.case_id == case.id)
        .order_by(PredictionRun.created_at.desc(), PredictionRun.id.desc())
        .limit(PER_SOURCE)
    )
    for run in session.scalars(query):
        _, name = top1(run.ranked)
        best = min(run.ranked, key=lambda r: r.get("rank", 0)) if run.ranked else None
        score = f" ({float(best['score']):.2f})" if best and isinstance(best.get("score"), int | float) else ""
        yield HistoryEntry(
            at=run.created_at,
            kind="prediction",
            title=f"Ranked by {run.model_id}@{run.model_version} ({run.ranked_by})",
            detail=f"top-1: {name}{score}" if name else "no syndrome ranked",
        )


def explanation_entries(session: Session, case: Case) -> Iterable[HistoryEntry]:
    """One entry per explanation run: the maps requested together (one job) for one target."""
    query = (
        select(Explanation, User.username)
        .outerjoin(User, User.id == Explanation.requested_by)
        .where(Explanation.case_id == case.id)
        .order_by(Explanation.created_at.desc(), Explanation.id)
        .limit(PER_SOURCE)
    )
    groups: dict[tuple[str, str], list[tuple[Explanation, str | None]]] = {}
    for row, username in session.execute(query):
        # Maps of one request share a job; rows whose job was deleted group by requester and second.
        key = (row.job_id or f"{row.requested_by}@{row.created_at:%Y%m%d%H%M%S}", row.target_id)
        groups.setdefault(key, []).append((row, username))
    for members in groups.values():
        rows = [m[0] for m in members]
        first = min(rows, key=lambda r: r.created_at)
        methods = sorted({r.method for r in rows})
        states: dict[str, int] = {}
        for r in rows:
            states[r.state] = states.get(r.state, 0) + 1
        n = len(methods)
        yield HistoryEntry(
            at=first.created_at,
            kind="explanation",
            title=f"Explained with {n} method{'' if n == 1 else 's'} for target {first.target_name}",
            detail=", ".join(methods) + " — " + ", ".join(f"{c} {s}" for s, c in sorted(states.items())),
            user=members[0][1],
        )


def diagnosis_entries(session: Session, case: Case) -> Iterable[HistoryEntry]:
    query = (
        select(Diagnosis)
        .where(Diagnosis.case_id == case.id)
        .order_by(Diagnosis.created_at.desc(), Diagnosis.id.desc())
        .limit(PER_SOURCE)
    )
    rows = list(session.scalars(query))[::-1]  # oldest first, to tell "confirmed" from "changed"
    previous: Diagnosis | None = None
    for row in rows:
        user = row.confirmer.username if row.confirmer else None
        if row.is_cleared:
            title, detail = "Diagnosis cleared", None
        else:
            verb = "changed to" if previous is not None and not previous.is_cleared else "confirmed:"
            title = f"Diagnosis {verb} {row.name}"
            parts = [f"OMIM:{row.omim}" if row.omim else None,
                     f"label {row.syndrome_id} of {row.model}" if row.syndrome_id else "entered by name"]
            detail = " · ".join(p for p in parts if p)
        yield HistoryEntry(at=row.created_at, kind="diagnosis", title=title, detail=detail, user=user)
        previous = row


_AUDIT_TITLES = {
    "upload": "Photo uploaded",
    "view": "Viewed",
    "predict": "New ranking requested",
    "explain": "Attribution maps requested",
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
            user=event.username,
        )
    if pending is not None:
        yield _view_entry(*pending)


def _view_entry(event: AuditEvent, count: int) -> HistoryEntry:
    return HistoryEntry(
        at=event.created_at,
        kind="audit",
        title="Viewed" if count == 1 else f"Viewed {count} times",
        detail=None if count == 1 else "the most recent view is shown",
        user=event.username,
    )


register_history_source(prediction_entries)
register_history_source(explanation_entries, covers=("explain",))
register_history_source(diagnosis_entries, covers=("diagnose",))
