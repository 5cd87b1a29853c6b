"""A case: one de-identified patient photo, the face chosen in it and its alignment onto the template.

Files (the re-encoded photo and the 112x112 aligned crop) live under the data directory; the row holds
their relative paths and everything needed to map between photo and crop coordinates.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, UTCDateTime, new_id, utcnow


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_owner_created", "owner_id", "created_at"),
        Index("ix_cases_created", "created_at"),
        Index("ix_cases_pseudonym", "pseudonym"),
        Index("ix_cases_photo_sha256", "photo_sha256"),
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

    owner: Mapped[User] = relationship(lazy="joined")
