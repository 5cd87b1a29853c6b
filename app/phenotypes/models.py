"""One row per (case, HPO term). Removing a term deletes its row; who added it and when are kept while it
stands (the audit trail records additions and removals, by term id only, never with the patient's data)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class CasePhenotype(Base):
    __tablename__ = "case_phenotypes"
    __table_args__ = (
        UniqueConstraint("case_id", "hpo_id", name="uq_case_phenotypes_case_hpo"),
        Index("ix_case_phenotypes_hpo_case", "hpo_id", "case_id"),  # the case list's HPO filter
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    hpo_id: Mapped[str] = mapped_column(String(10))  # "HP:0000316"
    name: Mapped[str] = mapped_column(String(300))  # the ontology's name when it was added
    # the clinician checked and the patient does *not* have it (counts against syndromes that have it)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    added_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
