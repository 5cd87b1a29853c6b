"""What the explanations domain registers with the cases domain: erasing a case removes the similarity maps
other cases hold *for* it (``reference_case_id``). The rows go with the case by their foreign key; their
``.npy`` files live in the other cases' folders, so they are named here to be unlinked after the commit.
(The case's own maps live in its own folder, which the erasure removes whole.)"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.erasure import Erasure, register_erasure
from app.explanations.models import Explanation


def purge_similarity_maps(session: Session, erasure: Erasure) -> None:
    for row in session.scalars(select(Explanation).where(Explanation.reference_case_id == erasure.case_id)):
        if row.map_path:
            erasure.unlink_stored(row.map_path)
        session.delete(row)
    session.flush()


register_erasure("explanations", purge=purge_similarity_maps)
