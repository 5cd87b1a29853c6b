"""Who may see a study and take part in it, and the read-outs of its cases and members.

Access rules, in one place for every kind of study:

* a study is visible to its members and to admins; to anyone else it does not exist (404);
* only members of a study take part in it, and only while it is open;
* results (which name the methods, or show other members' data) are for admins, and for the study's members
  once the study is closed.
"""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.errors import DomainError, Forbidden, NotFound
from app.studies.models import RatingStudy, StudyCase, StudyRater
from app.text import has_controls

MAX_CASES = 200
MAX_NAME = 200


class StudyError(DomainError):
    """Bad input for a study or for what a member submits in it (422 unless a status is given).

    A subclass only so that study pages can tell a refusal of the study's input from other errors.
    """


def clean_text(value: str | None, *, limit: int, multiline: bool = False) -> str | None:
    """Stripped of surrounding white space; empty → None; too long or holding a control character → 422
    (refused, never silently changed: see :mod:`app.text`). Comments are ``multiline``."""
    if value is None:
        return None
    if has_controls(value, multiline=multiline):
        raise StudyError("invalid_request", "Invalid request: text must not contain NUL or other control characters"
                         + (" (line breaks and tabs are fine)." if multiline else " (nor line breaks)."))
    cleaned = value.strip()
    if len(cleaned) > limit:
        raise StudyError("too_long", f"At most {limit} characters.")
    return cleaned or None


def case_label(case: Case | None, case_id: str) -> str:
    """How a study names a case to people: its pseudonym, else the start of its id."""
    return (case.pseudonym if case and case.pseudonym else None) or case_id[:8]


def is_member(session: Session, *, study_id: str, user_id: int) -> bool:
    return session.get(StudyRater, (study_id, user_id)) is not None


def get_study(session: Session, *, study_id: str, user: User, kind: str | None = None) -> RatingStudy:
    """The study if ``user`` is one of its members or an admin (and, given ``kind``, of that kind); otherwise
    it does not exist (404): a rating page never opens an attention study, nor the other way round."""
    study = session.get(RatingStudy, study_id) if study_id.isalnum() and len(study_id) <= 32 else None
    if study is None or (kind is not None and study.kind != kind) or not (
            user.is_admin or is_member(session, study_id=study.id, user_id=user.id)):
        raise NotFound("study")
    return study


def require_member(session: Session, *, study: RatingStudy, user: User) -> None:
    if not is_member(session, study_id=study.id, user_id=user.id):
        raise Forbidden("not_a_rater", "Only the raters of this study rate in it.")


def can_see_results(session: Session, *, study: RatingStudy, user: User) -> bool:
    return user.is_admin or (study.is_closed and is_member(session, study_id=study.id, user_id=user.id))


def require_results(session: Session, *, study: RatingStudy, user: User) -> None:
    if not can_see_results(session, study=study, user=user):
        raise Forbidden("results_not_open", "The results are shown to raters once an admin closes the study "
                        "(they name the methods, which would unblind the ratings).")


def studies_for(session: Session, *, user: User, kind: str | None = None) -> list[RatingStudy]:
    """The studies ``user`` may see, newest first: all of them for admins, their own for members."""
    query = select(RatingStudy).order_by(RatingStudy.created_at.desc(), RatingStudy.id)
    if kind is not None:
        query = query.where(RatingStudy.kind == kind)
    if not user.is_admin:
        query = query.join(StudyRater, StudyRater.study_id == RatingStudy.id).where(StudyRater.user_id == user.id)
    return list(session.scalars(query))


def study_cases(session: Session, *, study_id: str) -> list[StudyCase]:
    return list(session.scalars(select(StudyCase).where(StudyCase.study_id == study_id)
                                .order_by(StudyCase.position)))


def study_case_at(session: Session, *, study_id: str, position: int) -> StudyCase:
    row = session.scalar(select(StudyCase).where(StudyCase.study_id == study_id, StudyCase.position == position))
    if row is None:
        raise NotFound("case in this study")
    return row


def study_raters(session: Session, *, study_id: str) -> list[StudyRater]:
    """The study's members, by username (the order every listing uses)."""
    rows = session.scalars(select(StudyRater).where(StudyRater.study_id == study_id))
    return sorted(rows, key=lambda r: r.user.username)


def case_in_study(session: Session, case_id: str) -> bool:
    """True when the case belongs to any study, open or closed.

    Deleting such a case would take its maps and every member's answers with it (the foreign keys cascade),
    silently changing a study's published results: the cases domain refuses the deletion.
    """
    return bool(session.scalar(select(exists().where(StudyCase.case_id == case_id))))
