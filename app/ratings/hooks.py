"""What the ratings domain registers with the cases domain: erasure removes the case's ratings (and those of
similarity maps held for it), and the case list's "rated" filter asks this domain which cases are rated."""

from __future__ import annotations

from sqlalchemy import Select, delete, or_, select
from sqlalchemy.orm import Session

from app.cases.erasure import Erasure, register_erasure
from app.cases.marks import register_rated_cases
from app.explanations.models import Explanation
from app.ratings.models import Rating


def purge_ratings(session: Session, erasure: Erasure) -> None:
    held_for = select(Explanation.id).where(Explanation.reference_case_id == erasure.case_id)
    session.execute(delete(Rating).where(or_(Rating.case_id == erasure.case_id, Rating.explanation_id.in_(held_for))))


def rated_case_ids() -> Select[tuple[str]]:
    """A case is rated when a rating exists for one of its explanations (``ratings.case_id``, indexed)."""
    return select(Rating.case_id)


register_erasure("ratings", purge=purge_ratings)
register_rated_cases(rated_case_ids)
