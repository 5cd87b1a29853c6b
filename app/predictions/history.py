"""The prediction runs in the case page's history (registered with ``app.cases.history`` on import)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.history import PER_SOURCE, HistoryEntry, register_history_source
from app.cases.models import Case, top1
from app.predictions.models import PredictionRun
from app.predictions.scores import ordering_score


@register_history_source
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
        named = ordering_score(best, run.ranked_by) if best else None  # the ranking's own, named score
        score = f" ({named})" if named else ""
        yield HistoryEntry(
            at=run.created_at,
            kind="prediction",
            title=f"Ranked by {run.model_id}@{run.model_version} ({run.ranked_by})",
            detail=f"top-1: {name}{score}" if name else "no syndrome ranked",
        )
