"""The ratings' entries in the case page's history (registered with ``app.cases.history`` on import).

Ad-hoc ratings appear one by one (each is a deliberate "Save"). Ratings made in a study are summed up per
study and rater — the rating page saves every change, so single rows would flood the history — and name
no method: a study's blinding is not the case page's business.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.history import PER_SOURCE, HistoryEntry, register_history_source
from app.cases.models import Case
from app.explain.registry import METHODS
from app.ratings.models import Rating, RatingStudy
from app.synth.regions import get_region


@register_history_source
def rating_entries(session: Session, case: Case) -> Iterable[HistoryEntry]:
    adhoc = session.execute(
        select(Rating, User.username).join(User, User.id == Rating.rater_id)
        .where(Rating.case_id == case.id, Rating.study_id.is_(None))
        .order_by(Rating.id.desc()).limit(PER_SOURCE)
    )
    for rating, username in adhoc:
        info = METHODS.get(rating.method)
        parts = [", ".join(get_region(r).name for r in rating.regions) or "no region named",
                 "relies on non-facial context" if rating.context else None, rating.comment]
        yield HistoryEntry(
            at=rating.created_at, kind="rating", user=username,
            title=f"{info.label if info else rating.method} map rated {rating.score}/5 (target {rating.target_id})",
            detail=" · ".join(p for p in parts if p),
        )
    studies = session.execute(
        select(RatingStudy.id, RatingStudy.name, User.username, func.max(Rating.created_at),
               func.count(func.distinct(Rating.explanation_id)))
        .join(RatingStudy, RatingStudy.id == Rating.study_id).join(User, User.id == Rating.rater_id)
        .where(Rating.case_id == case.id)
        .group_by(RatingStudy.id, RatingStudy.name, User.username)
        .limit(PER_SOURCE)
    )
    # Neither the study's name nor a link: to someone outside the study it does not exist.
    for _study_id, _name, username, last, maps in studies:
        yield HistoryEntry(
            at=last, kind="rating", user=username,
            title=f"Rated {maps} map{'' if maps == 1 else 's'} in a rating study",
        )
