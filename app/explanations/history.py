"""The explanation runs in the case page's history (registered with ``app.cases.history`` on import)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.history import PER_SOURCE, HistoryEntry, register_history_source
from app.cases.models import Case
from app.explanations.models import Explanation


@register_history_source(covers=("explain",))
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
