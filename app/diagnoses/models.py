"""Confirmed diagnoses, append-only: confirming, changing or clearing a diagnosis adds a row.

The newest row of a case is its current diagnosis; a row with ``source == "cleared"`` means "no confirmed
diagnosis" (the earlier rows stay as history). The current values are also copied onto the case
(``cases.diagnosis_*``) so that the case list can filter on indexed columns.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, UTCDateTime, utcnow

MODEL_LABEL = "model_label"
FREE_TEXT = "free_text"
CLEARED = "cleared"
SOURCES = (MODEL_LABEL, FREE_TEXT, CLEARED)


class Diagnosis(Base):
    __tablename__ = "diagnoses"
    __table_args__ = (Index("ix_diagnoses_case_created", "case_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))  # model_label | free_text | cleared
    syndrome_id: Mapped[str | None] = mapped_column(String(64), default=None)  # a label id of `model`
    name: Mapped[str | None] = mapped_column(String(200), default=None)
    omim: Mapped[str | None] = mapped_column(String(6), default=None)  # six digits, no prefix
    model: Mapped[str | None] = mapped_column(String(140), default=None)  # "id@version" whose labels were used
    confirmed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    confirmer: Mapped[User | None] = relationship(lazy="joined")

    @property
    def is_cleared(self) -> bool:
        return self.source == CLEARED
