"""What the cohorts domain registers with the cases domain: erasing a case removes every group result it went
into — the rows and their folder (``composite.npy``, ``plain.npy``, the methods' ``.npy`` maps) at once, after
the commit, not on the next cohort request."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.erasure import Erasure, register_erasure
from app.cohorts.models import CohortResult
from app.cohorts.service import result_dir


def purge_cohort_results(session: Session, erasure: Erasure) -> None:
    for row in session.scalars(select(CohortResult)):
        if erasure.case_id in (row.case_ids or []):
            erasure.remove_tree(result_dir(erasure.data_dir, row.id))
            session.delete(row)
    session.flush()


register_erasure("cohorts", purge=purge_cohort_results)
