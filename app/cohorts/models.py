"""One stored cohort result: the composite face and syndrome-wise maps of one syndrome for one user.

Keyed by the requesting user and a digest of the exact case set, so a result is only ever served to the user
whose visible cases made it (cross-user isolation) and a change in that set (a new case, an erasure, a new
diagnosis) asks for a new result. The arrays and figures live in ``<data dir>/cohorts/<id>/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, new_id, utcnow
from app.jobs.models import QUEUED


class CohortResult(Base):
    __tablename__ = "cohort_results"
    __table_args__ = (
        Index("ix_cohort_results_lookup", "owner_id", "model_version", "syndrome_id", "objective", "digest"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    model_id: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    syndrome_id: Mapped[str] = mapped_column(String(64))
    objective: Mapped[str] = mapped_column(String(200))
    methods: Mapped[list[str]] = mapped_column(JSON, default=list)
    case_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    n_patients: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
