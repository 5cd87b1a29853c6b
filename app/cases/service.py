"""Case service: create from a processed photo, fetch with access control, list, erase."""

from __future__ import annotations

import cv2
import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.db import new_id
from app.vision.pipeline import ProcessedPhoto
from app.web.errors import NotFound

MAX_PSEUDONYM = 120


def clean_pseudonym(value: str | None) -> str | None:
    """Strip control characters and whitespace; empty means none."""
    if value is None:
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable()).strip()
    return cleaned[:MAX_PSEUDONYM] or None


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


def get_case(session: Session, *, user: User, case_id: str) -> Case:
    """The case if ``user`` may see it. Another user's case is reported as absent, never as forbidden."""
    case = session.get(Case, case_id) if case_id.isalnum() and len(case_id) <= 32 else None
    if case is None or not (user.is_admin or case.owner_id == user.id):
        raise NotFound("case")
    return case


def list_cases(
    session: Session, *, user: User, limit: int = 25, offset: int = 0, q: str | None = None
) -> tuple[list[Case], int]:
    query = select(Case)
    if not user.is_admin:
        query = query.where(Case.owner_id == user.id)
    if q and q.strip():
        term = q.strip()[:120]
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(
            or_(Case.pseudonym.ilike(f"%{escaped}%", escape="\\"), Case.id.startswith(term.lower(), autoescape=True))
        )
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Case.created_at.desc(), Case.id.desc()).limit(limit).offset(offset))
    return list(rows), total


def delete_case(session: Session, *, case: Case) -> None:
    """Erasure of the row. The caller commits and only then removes the files (``PhotoStore.remove_case``):
    a failed commit must not leave a case whose photo is gone. The audit trail keeps only the id."""
    session.delete(case)
    session.flush()
