"""Who may follow a job: the jobs domain knows no users' roles and no cases, so the rule lives here."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.jobs.models import Job


def get_job_for(session: Session, *, job_id: str, user: User) -> Job | None:
    """The job if this user may see it: its owner, an admin, or the owner of the case it works on (whose page
    polls it, whoever asked for the maps). None otherwise: the API answers 404."""
    job = session.get(Job, job_id)
    if job is None or user.role == "admin" or job.owner_id == user.id:
        return job
    case = session.get(Case, job.case_id) if job.case_id else None
    return job if case is not None and case.owner_id == user.id else None
