"""Audit events (app/audit/service.py): who did what to which case and when, never a health-derived value —
on writing, and on erasure for rows written before that rule."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.models import AuditEvent
from app.audit.service import HEALTH_KEYS, events_for_case, record, scrub_case
from app.db import make_engine


def test_record_keeps_who_what_when_and_drops_health_values(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with Session(engine) as session:
            record(session, action="explain", user=None, username="alice", case_id="c1", ip="10.0.0.1",
                   detail={"methods": ["saliency"], "target": "syn_a", "sha256": "ab" * 32, "omim": "OMIM:1"})
            session.commit()
            (event,) = events_for_case(session, case_id="c1")
            assert (event.action, event.username, event.ip) == ("explain", "alice", "10.0.0.1")
            assert event.detail == {"methods": ["saliency"]}
    finally:
        engine.dispose()


def test_erasure_scrubs_older_rows_but_keeps_them(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with Session(engine) as session:
            # rows as an older version wrote them, health values included (record() would drop them)
            session.add_all([
                AuditEvent(action="view", username="bob", case_id="c1", detail={"diagnosis": "syn_b", "page": 2}),
                AuditEvent(action="export", username="bob", case_id="c1", detail={"pseudonym": "P-7"}),
                AuditEvent(action="view", username="bob", case_id="c1", detail={"page": 1}),
                AuditEvent(action="view", username="bob", case_id="c2", detail={"diagnosis": "syn_c"}),
            ])
            session.commit()
            assert scrub_case(session, case_id="c1") == 2
            session.commit()
            kept = session.scalars(select(AuditEvent).where(AuditEvent.case_id == "c1")
                                   .order_by(AuditEvent.id)).all()
            assert [(e.action, e.detail) for e in kept] == [("view", {"page": 2}), ("export", {}),
                                                            ("view", {"page": 1})]
            assert all(not HEALTH_KEYS & set(e.detail or {}) for e in kept)
            other = session.scalar(select(AuditEvent).where(AuditEvent.case_id == "c2"))
            assert other.detail == {"diagnosis": "syn_c"}  # another case's rows are not touched
    finally:
        engine.dispose()
