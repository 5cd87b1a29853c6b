"""Rating studies and ratings of attribution maps.

A study fixes a set of cases, methods, a target rule and raters; at creation each (case, method) is pinned
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
from app.db import Base, UTCDateTime, new_id, utcnow

TOP1 = "top1"
CONFIRMED = "confirmed"
TARGET_RULES = (TOP1, CONFIRMED)


class RatingStudy(Base):
    __tablename__ = "rating_studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    target_rule: Mapped[str] = mapped_column(String(16), default=TOP1)
    blinded: Mapped[bool] = mapped_column(Boolean, default=True)
    seed: Mapped[int] = mapped_column(Integer)  # draws the per-rater, per-case orders (which are stored too)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    creator: Mapped[User | None] = relationship(lazy="joined")

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None


class StudyCase(Base):
    """A case in a study, at a fixed position (1-based: the rater's "case 3 of 10"), with its target."""

    __tablename__ = "rating_study_cases"
    __table_args__ = (UniqueConstraint("study_id", "position", name="uq_rating_study_cases_position"),)

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)
    target_id: Mapped[str] = mapped_column(String(64))
    target_name: Mapped[str] = mapped_column(String(200))


class StudyMethod(Base):
    __tablename__ = "rating_study_methods"

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    method: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class StudyRater(Base):
    """Membership: only raters of a study see it and may rate in it."""

    __tablename__ = "rating_study_raters"

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class StudyMap(Base):
    """The explanation row a study shows for (case, method): pinned at creation."""

    __tablename__ = "rating_study_maps"
    __table_args__ = (UniqueConstraint("study_id", "case_id", "method", name="uq_rating_study_maps_slot"),)

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    explanation_id: Mapped[str] = mapped_column(ForeignKey("explanations.id", ondelete="CASCADE"),
                                                primary_key=True, index=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(40))


class StudyItemOrder(Base):
    """The order in which one rater sees one case's maps: ``methods[0]`` is "Map A", and so on."""

    __tablename__ = "rating_study_orders"
    __table_args__ = (UniqueConstraint("study_id", "rater_id", "case_id", name="uq_rating_study_orders_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    methods: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


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
