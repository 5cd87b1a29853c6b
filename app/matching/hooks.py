"""What the matching domain registers with the domains below it (imported by :mod:`app.hooks`):

* with predictions: the shared confirmed cases as a second gallery for every case's ranking, and a run hook
  that keeps each ranked case's embeddings per model version;
* with cases: erasure deletes the case's embeddings and its share in the erasure's own transaction (the
  foreign keys cascade as well; deleting them here makes the clean-up explicit and independent of the
  database's foreign-key enforcement), so an erased face never ranks or matches again.
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.cases.erasure import Erasure, register_erasure
from app.matching.models import CaseEmbedding, MatchShare
from app.matching.service import living_references, store_from_run
from app.predictions.references import register_reference_source, register_run_hook


def purge(session: Session, erasure: Erasure) -> None:
    session.execute(delete(CaseEmbedding).where(CaseEmbedding.case_id == erasure.case_id))
    session.execute(delete(MatchShare).where(MatchShare.case_id == erasure.case_id))


register_reference_source(living_references)
register_run_hook(store_from_run)
register_erasure("matching", purge=purge)
