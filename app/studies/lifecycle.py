"""Creating a study's shared rows (cases, members, orders), closing and deleting studies.

Service functions take keyword arguments and a session and never commit: routes own the transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases.models import Case
from app.db import utcnow
from app.studies.access import MAX_CASES, StudyError
from app.studies.models import RatingStudy, StudyItemOrder, StudyRater


def check_cases(session: Session, *, admin: User, case_ids: Sequence[str]) -> list[Case]:
    """The cases, in the given order without repeats; each must exist and be one the creator may see."""
    unique = list(dict.fromkeys(case_ids))
    if not unique:
        raise StudyError("no_cases", "Choose at least one case.")
    if len(unique) > MAX_CASES:
        raise StudyError("too_many_cases", f"A study has at most {MAX_CASES} cases.")
    cases = []
    for case_id in unique:
        case = session.get(Case, case_id) if isinstance(case_id, str) and case_id.isalnum() else None
        if case is None or not (admin.is_admin or case.owner_id == admin.id):
            raise StudyError("unknown_case", f"No such case: {str(case_id)[:40]!r}.")
        cases.append(case)
    return cases


def check_members(session: Session, *, usernames: Sequence[str]) -> list[User]:
    """Active users by username, in the given order; an empty or unknown name is a 422."""
    names = list(dict.fromkeys(usernames))
    if not names:
        raise StudyError("no_raters", "Choose at least one rater.")
    users = list(session.scalars(select(User).where(User.username.in_(names), User.is_active.is_(True))))
    missing = sorted(set(names) - {u.username for u in users})
    if missing:
        raise StudyError("unknown_rater", f"No active user(s): {', '.join(missing)}.")
    users.sort(key=lambda u: names.index(u.username))
    return users


def add_members(session: Session, *, study: RatingStudy, users: Sequence[User], cases: Sequence[Case],
                items: Callable[[User, Case], list[str]] | None = None) -> None:
    """Make ``users`` members and, when ``items`` gives a member's ordered items of a case, store those orders."""
    for user in users:
        session.add(StudyRater(study_id=study.id, user_id=user.id))
    session.flush()
    if items is None:
        return
    for user in users:
        for case in cases:
            session.add(StudyItemOrder(study_id=study.id, rater_id=user.id, case_id=case.id,
                                       methods=items(user, case)))


def close_study(session: Session, *, study: RatingStudy, user: User, ip: str | None = None) -> None:
    if study.closed_at is None:
        study.closed_at = utcnow()
        audit.record(session, action="study_close", user=user, ip=ip, detail={"study": study.id})
        session.flush()


def delete_study(session: Session, *, study: RatingStudy, user: User, ip: str | None = None,
                 counts: dict[str, Any] | None = None) -> None:
    """Delete a study with everything that hangs off it (the database cascades); ``counts`` (e.g. how many
    ratings went with it) goes into the audit row. The caller commits."""
    audit.record(session, action="study_delete", user=user, ip=ip,
                 detail={"study": study.id, "name": study.name, **(counts or {})})
    session.execute(delete(RatingStudy).where(RatingStudy.id == study.id))
