"""Warnings for the admin about members whose answers cannot be blind."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.studies.access import study_raters
from app.studies.models import RatingStudy, StudyCase, StudyRater


def blinding_warnings(session: Session, *, study: RatingStudy) -> list[str]:
    """Raters who can see a study case's maps *with* their method names elsewhere (admins see every case
    page; owners see their own): their ratings of those cases are not blind. For the admin's eyes."""
    if not study.blinded:
        return []
    warnings = []
    raters = study_raters(session, study_id=study.id)
    for rater in raters:
        if rater.user.is_admin:
            warnings.append(f"{rater.user.username} is an admin: admins can open every case page, where these "
                            "maps are shown with their method names.")
    owned = session.execute(
        select(User.username, StudyCase.position, StudyCase.case_id, Case.pseudonym)
        .join(StudyRater, StudyRater.user_id == User.id)
        .join(StudyCase, StudyCase.study_id == StudyRater.study_id)
        .join(Case, and_(Case.id == StudyCase.case_id, Case.owner_id == User.id))
        .where(StudyRater.study_id == study.id, User.role != "admin")
        .order_by(User.username, StudyCase.position)
    )
    by_rater: dict[str, list[str]] = defaultdict(list)
    for username, _, case_id, pseudonym in owned:
        by_rater[username].append(pseudonym or case_id[:8])
    for username, labels in by_rater.items():
        cases = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
        warnings.append(f"{username} owns {len(labels)} case{'' if len(labels) == 1 else 's'} of this study "
                        f"({cases}): on their case page the same maps are shown with their method names, so "
                        "their ratings of these cases are not blind.")
    return warnings
