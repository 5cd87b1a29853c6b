"""The confirmed diagnoses in the case page's history (registered with ``app.cases.history`` on import)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.history import PER_SOURCE, HistoryEntry, register_history_source
from app.cases.models import Case
from app.diagnoses.models import Diagnosis


@register_history_source(covers=("diagnose",))
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
