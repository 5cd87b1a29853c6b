"""Case service: create from a processed photo, fetch with access control, list, erase."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import ColumnElement, Select, false, func, or_, select, true
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.erasure import Erasure
from app.cases.erasure import purge as run_erasure_hooks
from app.cases.marks import rated_case_ids
from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.db import new_id
from app.errors import NotFound
from app.text import has_controls
from app.vision.pipeline import ProcessedPhoto

MAX_PSEUDONYM = 120


def clean_pseudonym(value: str | None) -> str | None:
    """Strip control characters and whitespace; empty means none."""
    if value is None:
        return None
    cleaned = value.strip()  # control characters were refused before (pseudonym_problem)
    return cleaned[:MAX_PSEUDONYM] or None


def pseudonym_problem(value: str | None) -> str | None:
    """Why a pseudonym cannot be stored as given, or None. Refused rather than silently cut or stripped: the
    clinician must find the case again under the name they typed."""
    if value is None:
        return None
    if has_controls(value):
        return "pseudonym: control characters (NUL, line breaks …) are not allowed"
    if len(value.strip()) > MAX_PSEUDONYM:
        return f"pseudonym: at most {MAX_PSEUDONYM} characters"
    return None


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buffer.tobytes()


def create_case(
    session: Session, *, owner: User, processed: ProcessedPhoto, pseudonym: str | None, store: PhotoStore
) -> Case:
    """Store the de-identified photo and crop, then the row. Files are removed if the row cannot be saved."""
    case_id = new_id()
    photo, face, aligned = processed.photo, processed.face, processed.aligned
    try:
        photo_path = store.write(case_id, "photo.jpg", photo.encoded)
        aligned_path = store.write(case_id, "aligned.png", encode_png(aligned.crop))
        case = Case(
            id=case_id,
            owner_id=owner.id,
            pseudonym=clean_pseudonym(pseudonym),
            photo_path=photo_path,
            photo_media_type=photo.media_type,
            photo_sha256=photo.sha256,
            photo_width=int(photo.rgb.shape[1]),
            photo_height=int(photo.rgb.shape[0]),
            source_format=photo.source_format,
            aligned_path=aligned_path,
            face_count=len(processed.faces),
            face_index=processed.face_index,
            face_box=[float(v) for v in face.box],
            landmarks=np.asarray(face.landmarks, dtype=float).round(3).tolist(),
            detector_score=float(face.score),
            align_matrix=np.asarray(aligned.matrix, dtype=float).tolist(),
            align_residual=float(aligned.residual),
        )
        session.add(case)
        session.flush()
    except BaseException:
        store.remove_case(case_id)
        raise
    return case


def sweep_orphan_files(session: Session, *, store: PhotoStore, grace_s: float) -> list[str]:
    """Remove case folders that have no case row and are older than ``grace_s``; returns their ids.

    An upload writes its files first and commits the row after (so a row never points at missing files);
    a process killed between the two leaves files no row refers to, which nothing would ever erase. Run at
    start-up. The grace period spares uploads still in flight in another web process sharing the store."""
    horizon = datetime.now(UTC).timestamp() - grace_s
    candidates = [case_id for case_id, mtime in store.case_folders() if mtime <= horizon]
    known: set[str] = set()
    for start in range(0, len(candidates), 500):
        chunk = candidates[start:start + 500]
        known.update(session.scalars(select(Case.id).where(Case.id.in_(chunk))))
    orphans = [case_id for case_id in candidates if case_id not in known]
    for case_id in orphans:
        store.remove_case(case_id)
    return orphans


def get_case(session: Session, *, user: User, case_id: str) -> Case:
    """The case if ``user`` may see it. Another user's case is reported as absent, never as forbidden."""
    case = session.get(Case, case_id) if case_id.isalnum() and len(case_id) <= 32 else None
    if case is None or not (user.is_admin or case.owner_id == user.id):
        raise NotFound("case")
    return case


SORTS = ("created", "pseudonym", "predicted")
ORDERS = ("asc", "desc")


@dataclass(frozen=True)
class CaseFilters:
    """What the case list can be narrowed and ordered by (the API's query parameters and the page's form).

    ``diagnosis``: "any" (a confirmed diagnosis exists), "none", or a syndrome id / OMIM id it must match.
    ``rated``: True (some explanation of the case has a rating), False (none has), None (either).
    ``owner``: a username; it narrows what the caller may see anyway (for a clinician: only their own).
    """

    q: str | None = None
    created_from: date | None = None
    created_to: date | None = None
    predicted: str | None = None
    diagnosis: str | None = None
    rated: bool | None = None
    owner: str | None = None
    hpo: str | None = None  # an HPO id the case's phenotype holds (app.phenotypes)
    sort: str = "created"
    order: str = "desc"

    @property
    def narrowed(self) -> bool:
        """Filtered by more than the search text."""
        return any(v not in (None, "") for v in (self.created_from, self.created_to, self.predicted,
                                                 self.diagnosis, self.rated, self.owner, self.hpo))

    @property
    def active(self) -> bool:
        return bool(self.q) or self.narrowed


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def rated_clause(rated: bool) -> ColumnElement[bool]:
    """A case is rated when the ratings domain says so (:mod:`app.cases.marks`; nothing is without it)."""
    rated_ids = rated_case_ids()
    if rated_ids is None:  # no ratings domain registered: nothing is rated
        return false() if rated else true()
    exists = Case.id.in_(rated_ids)
    return exists if rated else ~exists


def _diagnosis_clause(value: str) -> ColumnElement[bool]:
    term = value.strip()
    if term.lower() == "any":
        return Case.diagnosis_name.is_not(None)
    if term.lower() == "none":
        return Case.diagnosis_name.is_(None)
    digits = term.split(":", 1)[1].strip() if term.lower().startswith("omim:") else term
    if len(digits) == 6 and digits.isdigit():
        return Case.diagnosis_omim == digits
    return Case.diagnosis_syndrome_id == term[:64]


def filtered_query(user: User, filters: CaseFilters) -> Select[tuple[Case]]:
    query = select(Case)
    if not user.is_admin:
        query = query.where(Case.owner_id == user.id)
    if filters.q and filters.q.strip():
        term = filters.q.strip()[:120]
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            or_(Case.pseudonym.ilike(f"%{escaped}%", escape="\\"), Case.id.startswith(term.lower(), autoescape=True))
        )
    if filters.created_from:
        query = query.where(Case.created_at >= _day_start(filters.created_from))
    if filters.created_to and filters.created_to < date.max:  # inclusive: the whole day (9999-12-31: no bound)
        query = query.where(Case.created_at < _day_start(filters.created_to + timedelta(days=1)))
    if filters.predicted:
        query = query.where(Case.predicted_syndrome_id == filters.predicted[:64])
    if filters.diagnosis and filters.diagnosis.strip():
        query = query.where(_diagnosis_clause(filters.diagnosis))
    if filters.rated is not None:
        query = query.where(rated_clause(filters.rated))
    if filters.owner:
        owner_id = select(User.id).where(User.username == filters.owner[:64]).scalar_subquery()
        query = query.where(Case.owner_id == owner_id)
    if filters.hpo:
        from app.phenotypes.models import CasePhenotype  # the phenotype domain builds on cases, not vice versa

        hpo_id = filters.hpo if filters.hpo.startswith("HP:") else f"HP:{filters.hpo}"
        query = query.where(Case.id.in_(select(CasePhenotype.case_id).where(CasePhenotype.hpo_id == hpo_id[:10],
                                                                              CasePhenotype.excluded.is_(False))))
    return query


def _ordering(filters: CaseFilters) -> list[ColumnElement[object]]:
    descending = filters.order == "desc"
    newest_first = [Case.created_at.desc(), Case.id.desc()]
    if filters.sort == "pseudonym":
        column = Case.pseudonym
    elif filters.sort == "predicted":
        column = Case.predicted_syndrome_name
    else:
        return newest_first if descending else [Case.created_at.asc(), Case.id.asc()]
    # Cases without a value come last in both directions, on every backend.
    return [(column.desc() if descending else column.asc()).nulls_last(), *newest_first]


def list_cases(
    session: Session,
    *,
    user: User,
    limit: int = 25,
    offset: int = 0,
    q: str | None = None,
    filters: CaseFilters | None = None,
) -> tuple[list[Case], int]:
    filters = filters or CaseFilters(q=q)
    query = filtered_query(user, filters)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(*_ordering(filters)).limit(limit).offset(offset))
    return list(rows), total


def owner_names(session: Session) -> list[str]:
    """Usernames for the admin's owner filter."""
    return list(session.scalars(select(User.username).order_by(User.username)))


def free_text_diagnoses(session: Session, *, user: User) -> list[tuple[str, str]]:
    """(OMIM id, name) of the confirmed diagnoses outside the model's labels among the cases ``user`` sees."""
    query = (
        select(Case.diagnosis_omim, func.min(Case.diagnosis_name))
        .where(Case.diagnosis_omim.is_not(None), Case.diagnosis_syndrome_id.is_(None))
        .group_by(Case.diagnosis_omim)
        .order_by(func.min(Case.diagnosis_name))
    )
    if not user.is_admin:
        query = query.where(Case.owner_id == user.id)
    return [(omim, name or "") for omim, name in session.execute(query)]


def delete_case(session: Session, *, case: Case, store: PhotoStore, data_dir: Path) -> Erasure:
    """Erasure of the row and of everything each domain registered as derived from it
    (:mod:`app.cases.erasure`); raises :class:`~app.cases.erasure.ErasureRefused` when a guard refuses.

    The caller commits and only then calls ``finish()`` on the answer, which removes the files (the case's
    folder, files of other cases and group results derived from it): a failed commit must not leave a case
    whose photo is gone. The audit trail keeps the id, who did what and when, and loses any health-derived
    value an older row still held."""
    from app.audit.service import scrub_case  # late: the audit domain imports the auth models only

    scrub_case(session, case_id=case.id)
    erasure = Erasure(case_id=case.id, store=store, data_dir=data_dir)
    run_erasure_hooks(session, case, erasure)
    session.delete(case)
    session.flush()
    return erasure
