"""What the studies domain registers with the cases domain: a case in a study is never erased."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.cases.erasure import Refusal, register_erasure
from app.cases.models import Case
from app.studies.access import case_in_study


def refuse_case_in_study(session: Session, case: Case) -> Refusal | None:
    """Erasing it would silently remove every rater's ratings of it from the study's results."""
    if not case_in_study(session, case.id):
        return None
    return Refusal("case_in_study", "This case is part of a rating study; an admin must delete the study "
                   "(Studies → the study → Delete study) before the case can be erased.")


register_erasure("studies", guard=refuse_case_in_study)
