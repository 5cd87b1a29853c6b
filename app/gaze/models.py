"""Gaze tables: participants, imports (one per file, or per browser viewing) and fixations.

A fixation keeps its position in photo pixels (what the tracker saw, after the stimulus rectangle is undone)
and in aligned 112x112 pixels (by the case's stored alignment matrix, computed once at import), so metrics
never re-map and a changed mapping would show up as a new import, not a silent change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, new_id, utcnow

CLINICAL_GENETICIST = "clinical_geneticist"
OTHER_CLINICIAN = "other_clinician"
NON_CLINICIAN = "non_clinician"
STANDARD_GROUPS = (CLINICAL_GENETICIST, OTHER_CLINICIAN, NON_CLINICIAN)
GROUP_LABELS = {CLINICAL_GENETICIST: "clinical geneticists", OTHER_CLINICIAN: "other clinicians",
                NON_CLINICIAN: "non-clinicians"}


class Participant(Base):
    """Someone whose gaze was recorded: a code (never a name), a group and optional experience.

    ``user_id`` links the participant of a browser attention study to the account that took part; tracker
    participants have none.
    """

    __tablename__ = "gaze_participants"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    group: Mapped[str] = mapped_column(String(40), index=True)
    experience_years: Mapped[float | None] = mapped_column(Float, default=None)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None,
                                                unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class GazeImport(Base):
    """One imported file (or one browser viewing): what it was, what came in, what was dropped and why."""

    __tablename__ = "gaze_imports"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    format: Mapped[str] = mapped_column(String(24))
    filename: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)  # a file lands once
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fixations: Mapped[int] = mapped_column(Integer, default=0)
    study_id: Mapped[str | None] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), default=None,
                                                 index=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Fixation(Base):
    __tablename__ = "gaze_fixations"
    __table_args__ = (Index("ix_gaze_fixations_case_participant", "case_id", "participant_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    import_id: Mapped[str] = mapped_column(ForeignKey("gaze_imports.id", ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("gaze_participants.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # order within (import, participant, case): the scan path
    photo_x: Mapped[float] = mapped_column(Float)
    photo_y: Mapped[float] = mapped_column(Float)
    aligned_x: Mapped[float] = mapped_column(Float)
    aligned_y: Mapped[float] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float)
    onset_ms: Mapped[float | None] = mapped_column(Float, default=None)

    participant: Mapped[Participant] = relationship(lazy="joined")
