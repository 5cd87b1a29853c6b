"""Stored syndrome rankings. One row per run: a case is ranked at upload and again whenever someone asks
(e.g. after the served model changed); the newest run is the one shown, older ones are history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow


class PredictionRun(Base):
    __tablename__ = "prediction_runs"
    __table_args__ = (Index("ix_prediction_runs_case_created", "case_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    model_id: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    ranked_by: Mapped[str] = mapped_column(String(16))  # "gallery" or "softmax"
    ranked: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # the out-of-range verdict (app.nets.ood.OodResult.to_json); None when the model has no calibration
    out_of_distribution: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
