"""The tables every kind of study shares: the study, its cases (in a fixed order), its members and their
per-participant orders.

The tables keep the names they were born with (``rating_studies``…): rating studies came first, and renaming
live tables buys nothing but a risky migration. A study's kind says which task its members do.

A study fixes a set of cases and members; each member sees a case's items (a rating study's maps) in an order
drawn once per (member, case) and stored (``rating_study_orders``): reproducible, and auditable after the fact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.auth.models import User
from app.db import Base, UTCDateTime, new_id, utcnow

TOP1 = "top1"
CONFIRMED = "confirmed"
TARGET_RULES = (TOP1, CONFIRMED)

RATING = "rating"
ATTENTION = "attention"
KINDS = (RATING, ATTENTION)


class RatingStudy(Base):
    """A study (of any kind; the class keeps its first name so existing imports hold)."""

    __tablename__ = "rating_studies"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    target_rule: Mapped[str] = mapped_column(String(16), default=TOP1)
    blinded: Mapped[bool] = mapped_column(Boolean, default=True)
    seed: Mapped[int] = mapped_column(Integer)  # draws the per-rater, per-case orders (which are stored too)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    kind: Mapped[str] = mapped_column(String(16), default=RATING, server_default=RATING)
    settings: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # the kind's own settings

    creator: Mapped[User | None] = relationship(lazy="joined")

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None


Study = RatingStudy


class StudyCase(Base):
    """A case in a study, at a fixed position (1-based: the rater's "case 3 of 10"), with its target."""

    __tablename__ = "rating_study_cases"
    __table_args__ = (UniqueConstraint("study_id", "position", name="uq_rating_study_cases_position"),)

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)
    target_id: Mapped[str] = mapped_column(String(64))
    target_name: Mapped[str] = mapped_column(String(200))


class StudyRater(Base):
    """Membership: only members (raters, participants) of a study see it and take part in it."""

    __tablename__ = "rating_study_raters"

    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship(lazy="joined")


class StudyItemOrder(Base):
    """The order in which one member sees one case's items: ``methods[0]`` is "Map A", and so on."""

    __tablename__ = "rating_study_orders"
    __table_args__ = (UniqueConstraint("study_id", "rater_id", "case_id", name="uq_rating_study_orders_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("rating_studies.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    methods: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
