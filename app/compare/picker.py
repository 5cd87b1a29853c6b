"""What Compare's reference picker offers: cases found by pseudonym (or the most recent ones), the gallery faces
nearest to this case per syndrome (from its stored ranking) and the syndromes' centroids.

A clinician knows cases by pseudonym, never by their 32-character id, so the picker searches pseudonyms and fills
in the reference for them; :func:`case_by_pseudonym` lets ``case:<pseudonym>`` be typed as well.
TODO(issue 22): the nearest gallery faces over the whole gallery (not one per ranked syndrome) once the gallery
branch's nearest-faces source lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.nets.registry import LoadedModel
from app.predictions.service import latest_run

RECENT = 8
MATCHES = 12


@dataclass(frozen=True)
class Choice:
    reference: str  # what goes into the reference field, e.g. "case:<id>"
    label: str
    detail: str = ""


@dataclass(frozen=True)
class Choices:
    cases: list[Choice]
    cases_title: str
    nearest: list[Choice]
    centroids: list[Choice]
    cases_empty: str = "No other case yet."  # what an empty case list means: nothing found, or nothing there


def _visible(user: User):
    query = select(Case)
    return query if user.is_admin else query.where(Case.owner_id == user.id)


def case_by_pseudonym(session: Session, *, user: User, pseudonym: str, exclude: str | None = None) -> Case | None:
    """The newest case ``user`` may see whose pseudonym is ``pseudonym`` (case-insensitive), other than ``exclude``.

    Cases sharing a pseudonym are one patient, so the newest photo stands for them."""
    query = _visible(user).where(func.lower(Case.pseudonym) == pseudonym.strip().lower())
    if exclude:
        query = query.where(Case.id != exclude)
    return session.scalars(query.order_by(Case.created_at.desc(), Case.id.desc()).limit(1)).first()


def choices(session: Session, *, user: User, case: Case, model: LoadedModel, q: str = "") -> Choices:
    q = (q or "").strip()[:80]
    query = _visible(user).where(Case.id != case.id)
    if q:
        needle = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(Case.pseudonym).like(f"%{needle}%", escape="\\"))
    rows = session.scalars(query.order_by(Case.created_at.desc(), Case.id.desc()).limit(MATCHES if q else RECENT))
    cases = [Choice(f"case:{row.id}", row.pseudonym or f"case {row.id[:8]}",
                     row.created_at.strftime("%Y-%m-%d %H:%M")) for row in rows]
    names = {label.id: label.name for label in model.labels}
    nearest: list[Choice] = []
    run = latest_run(session, case_id=case.id)
    if run is not None and (run.model_id, run.model_version) == (model.card.id, model.card.version):
        for row in (run.ranked or [])[:5]:
            if row.get("image_id") and row.get("distance") is not None:
                name = names.get(row["syndrome_id"], row["syndrome_id"])
                if not q or q.lower() in name.lower():
                    nearest.append(Choice(f"nearest:{row['syndrome_id']}", f"nearest {name} gallery face",
                                          f"rank {row.get('rank')}, similarity {1 - float(row['distance']):.3f}"))
    centroids: list[Choice] = []
    if model.gallery is not None:
        present = set(model.gallery.labels.tolist())
        centroids = [Choice(f"centroid:{label.id}", f"centroid of {label.name}") for label in model.labels
                     if label.id in present and (not q or q.lower() in label.name.lower())]
    title = f"Cases matching “{q}”" if q else "Recent cases"
    empty = "No case you may see has a pseudonym with that text." if q else "No other case yet."
    return Choices(cases=cases, cases_title=title, nearest=nearest, centroids=centroids, cases_empty=empty)
