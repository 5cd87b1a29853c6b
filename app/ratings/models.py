"""Rating studies and ratings of attribution maps (the tables every study shares live in ``app.studies.models``).

A rating study fixes a set of cases, methods, a target rule and raters; at creation each (case, method) is pinned
to one explanation row (``rating_study_maps``), so every rater rates exactly the same maps. Each rater sees
a case's maps as "Map A, B, C…" in an order drawn once per (rater, case) and stored
(``rating_study_orders``): reproducible, and auditable after the fact.

Ratings are append-only: changing a score adds a row, and the newest row per (study, rater, map) is the
one that counts (``id`` orders rows: it grows with every insert on every backend). ``study_id`` NULL marks
an ad-hoc rating made from the normal case page. ``case_id`` and ``method`` are copied from the map so
exports and per-case queries need no join.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, UTCDateTime, utcnow
from app.studies.models import (
    CONFIRMED,
    TARGET_RULES,
    TOP1,
    RatingStudy,
    StudyCase,
    StudyItemOrder,
    StudyRater,
)

__all__ = ["CONFIRMED", "TARGET_RULES", "TOP1", "Rating", "RatingStudy", "StudyCase", "StudyItemOrder", "StudyMap",
           "StudyMethod", "StudyRater"]


class StudyMethod(Base):
    __tablename__ = "rating_study_methods"

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class StudyMap(Base):
    """The explanation row a study shows for (case, method): pinned at creation."""

    __tablename__ = "rating_study_maps"
    __table_args__ = (UniqueConstraint("study_id", "case_id", "method", name="uq_rating_study_maps_slot"),)

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    explanation_id: Mapped[str] = mapped_column(ForeignKey("explanations.id", ondelete="CASCADE"),
                                                primary_key=True, index=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(40))


class Rating(Base):
    __tablename__ = "ratings"
    __table_args__ = (
        Index("ix_ratings_study_rater_explanation", "study_id", "rater_id", "explanation_id"),
        Index("ix_ratings_explanation", "explanation_id"),
        Index("ix_ratings_rater_created", "rater_id", "created_at"),
        CheckConstraint("score >= 1 AND score <= 5", name="score_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    explanation_id: Mapped[str] = mapped_column(ForeignKey("explanations.id", ondelete="CASCADE"))
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[str | None] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), default=None)
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    method: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(64))
    blinded: Mapped[bool] = mapped_column(Boolean)
    blinded_label: Mapped[str | None] = mapped_column(String(4), default=None)
    score: Mapped[int] = mapped_column(SmallInteger)
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    context: Mapped[bool] = mapped_column(Boolean, default=False)
    comment: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    rater: Mapped[User] = relationship(lazy="joined")
