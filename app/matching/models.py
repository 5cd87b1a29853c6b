"""Tables of matching: every ranked case's embeddings per model version, and the cases shared for matching.

Embeddings are stored for every case a model ranks (not only shared ones): similar patients and matches
compare a user's own cases too. A case's rows go with the case (``ON DELETE CASCADE``): erasure removes
them in the same transaction as the case row, so an erased face never ranks again.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, utcnow
from app.nets.iresnet import EMBEDDING_DIM


class CaseEmbedding(Base):
    """A case's (views, 512) float32 embedding by one model version (the views of its ranking)."""

    __tablename__ = "case_embeddings"
    __table_args__ = (
        UniqueConstraint("case_id", "model_id", "model_version", name="uq_case_embeddings_case_model"),
        Index("ix_case_embeddings_model", "model_id", "model_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    model_id: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(64))
    views: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, row-major (views, 512)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def array(self) -> np.ndarray:
        return np.frombuffer(self.vector, dtype=np.float32).reshape(self.views, EMBEDDING_DIM)


class MatchShare(Base):
    """A confirmed case its clinician shares for matching: present = shared (revoking deletes the row;
    both are audited). Sharing needs a confirmed diagnosis; clearing the diagnosis ends the share."""

    __tablename__ = "match_shares"

    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    shared_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    shared_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
