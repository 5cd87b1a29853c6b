"""A case: one de-identified patient photo, the face chosen in it and its alignment onto the template.

Files (the re-encoded photo and the 112x112 aligned crop) live under the data directory; the row holds
their relative paths and everything needed to map between photo and crop coordinates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, Float, ForeignKey, Index, Integer, String, event, update
from sqlalchemy.orm import Mapped, mapped_column, object_session, relationship
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from app.auth.models import User
from app.db import Base, UTCDateTime, new_id, utcnow
from app.predictions.models import PredictionRun


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_owner_created", "owner_id", "created_at"),
        Index("ix_cases_created", "created_at"),
        Index("ix_cases_pseudonym", "pseudonym"),
        Index("ix_cases_photo_sha256", "photo_sha256"),
        Index("ix_cases_predicted_created", "predicted_syndrome_id", "created_at"),
        Index("ix_cases_predicted_name", "predicted_syndrome_name"),
        Index("ix_cases_diagnosis_syndrome", "diagnosis_syndrome_id"),
        Index("ix_cases_diagnosis_omim", "diagnosis_omim"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    pseudonym: Mapped[str | None] = mapped_column(String(120), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    photo_path: Mapped[str] = mapped_column(String(255))
    photo_media_type: Mapped[str] = mapped_column(String(32))
    photo_sha256: Mapped[str] = mapped_column(String(64))
    photo_width: Mapped[int] = mapped_column(Integer)
    photo_height: Mapped[int] = mapped_column(Integer)
    source_format: Mapped[str] = mapped_column(String(16))
    aligned_path: Mapped[str] = mapped_column(String(255))

    face_count: Mapped[int] = mapped_column(Integer)
    face_index: Mapped[int] = mapped_column(Integer)
    face_box: Mapped[list[float]] = mapped_column(JSON)
    landmarks: Mapped[list[list[float]]] = mapped_column(JSON)
    detector_score: Mapped[float] = mapped_column(Float)
    align_matrix: Mapped[list[list[float]]] = mapped_column(JSON)
    align_residual: Mapped[float] = mapped_column(Float)

    # Denormalised for the case list's filters and sorting (indexed columns, never JSON look-ups):
    # the top-1 syndrome of the newest prediction run (kept by the listener below) and the current
    # confirmed diagnosis (kept by app.diagnoses.service; the ``diagnoses`` table is the history).
    predicted_syndrome_id: Mapped[str | None] = mapped_column(String(64), default=None)
    predicted_syndrome_name: Mapped[str | None] = mapped_column(String(200), default=None)
    diagnosis_syndrome_id: Mapped[str | None] = mapped_column(String(64), default=None)
    diagnosis_omim: Mapped[str | None] = mapped_column(String(6), default=None)
    diagnosis_name: Mapped[str | None] = mapped_column(String(200), default=None)

    owner: Mapped[User] = relationship(lazy="joined")


def top1(ranked: list[dict[str, Any]] | None) -> tuple[str | None, str | None]:
    """(syndrome id, name) of the best-ranked row of a stored ranking."""
    if not ranked:
        return None, None
    best = min(ranked, key=lambda row: row.get("rank", 0))
    syndrome_id = best.get("syndrome_id")
    name = best.get("name")
    return (str(syndrome_id)[:64] if syndrome_id is not None else None, str(name)[:200] if name else None)


@event.listens_for(PredictionRun, "after_insert")
def _keep_predicted_syndrome(_mapper: Any, connection: Connection, run: PredictionRun) -> None:
    """Every new run is the newest one of its case: copy its top-1 onto the case, whoever stored the run."""
    syndrome_id, name = top1(run.ranked)
    connection.execute(
        update(Case.__table__)
        .where(Case.__table__.c.id == run.case_id)
        .values(predicted_syndrome_id=syndrome_id, predicted_syndrome_name=name)
    )
    session = object_session(run)
    case = session.identity_map.get(identity_key(Case, run.case_id)) if session is not None else None
    if case is not None:  # keep a loaded case in step without marking it dirty
        set_committed_value(case, "predicted_syndrome_id", syndrome_id)
        set_committed_value(case, "predicted_syndrome_name", name)
