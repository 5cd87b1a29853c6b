"""Stored attribution maps: one row per (case, model version, method, target, parameters, objective, subject).

That tuple is unique, which makes the table the results cache: asking again for a map that exists (or
is being computed) returns the same row instead of computing it twice. The float32 map itself is a
``.npy`` file in the case's folder, so erasing a case erases its maps.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, validates

from app.db import Base, UTCDateTime, new_id, utcnow
from app.jobs.models import QUEUED

CASE_OBJECTIVE = "similarity:case:"


def reference_case_of(objective: str | None) -> str | None:
    """The case id a ``similarity:case:<id>`` objective names, or None."""
    if objective and objective.startswith(CASE_OBJECTIVE):
        return objective.removeprefix(CASE_OBJECTIVE)[:32] or None
    return None


class Explanation(Base):
    __tablename__ = "explanations"
    __table_args__ = (
        UniqueConstraint("case_id", "model_id", "model_version", "method", "target_id", "params_key", "objective",
                         "subject", "mode", name="uq_explanations_key"),
        Index("ix_explanations_case_created", "case_id", "created_at"),
        Index("ix_explanations_job", "job_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), default=None)
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    model_id: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(64))
    target_index: Mapped[int] = mapped_column(Integer)
    target_name: Mapped[str] = mapped_column(String(200))
    #: what the map explains (app.explain.objectives): "logit" (the target's logit) or a similarity key such as
    #: "similarity:case:<id>", "similarity:gallery:<image id>", "similarity:centroid:<syndrome id>"
    objective: Mapped[str] = mapped_column(String(200), default="logit", server_default="logit")
    #: the other case a ``similarity:case:<id>`` objective compares with (set from the objective, never by hand):
    #: a real foreign key, so erasing that case removes this row with it (ON DELETE CASCADE)
    reference_case_id: Mapped[str | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), default=None,
                                                          index=True)
    #: the image the map is drawn on: "" = the case's own aligned crop, "gallery:<image id>" = a gallery face
    #: re-rendered from the synthetic generator (the other side of a comparison; stored with the query case)
    subject: Mapped[str] = mapped_column(String(120), default="", server_default="")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: how the map was computed (app.explain.fast): "exact" (naive Captum's numbers) or "fast" (a measured
    #: approximation); part of the cache key, shown with the map and in figures so neither passes for the other
    mode: Mapped[str] = mapped_column(String(8), default="exact", server_default="exact")
    params_key: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=QUEUED)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    map_path: Mapped[str | None] = mapped_column(String(255), default=None)
    stats: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)
    duration_ms: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    @validates("objective")
    def _tie_reference_case(self, _key: str, objective: str) -> str:
        self.reference_case_id = reference_case_of(objective)
        return objective

    @property
    def model_tag(self) -> str:
        return f"{self.model_id}@{self.model_version}"
