"""Attention studies: the second study kind on the shared framework (app/studies).

Membership, access, progress and resume, closing, deletion and the CSV plumbing are the framework's; this
module adds what is particular to attention: the viewer settings, a participant code per member (the gaze
tables hold codes, never accounts' names), and one recorded viewing per (member, case), stored as an import
of pseudo-fixations into the same tables as tracker data, so the same metrics apply.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases.models import Case
from app.evaluate.gaze_maps import to_aligned
from app.gaze import pointer
from app.gaze.models import Fixation, GazeImport, Participant
from app.gaze.service import check_group
from app.studies import access, lifecycle
from app.studies.models import ATTENTION, RatingStudy, StudyCase
from app.studies.order import draw_order
from app.studies.progress import Progress, all_complete

VIEWERS = ("window", "bubbles")
MIN_SECONDS, MAX_SECONDS = 2, 120
MAX_SAMPLES = 10_000  # 120 s at 20 Hz is 2,400


@dataclass
class AttentionRequest:
    name: str
    case_ids: list[str]
    participants: list[str]  # usernames
    group: str
    viewer: str = "window"
    seconds: int = 10


def create(session: Session, *, admin: User, body: AttentionRequest, ip: str | None = None) -> RatingStudy:
    name = access.clean_text(body.name, limit=access.MAX_NAME)
    if not name:
        raise access.StudyError("invalid_name", "Give the study a name.")
    if body.viewer not in VIEWERS:
        raise access.StudyError("invalid_viewer", f"viewer is one of: {', '.join(VIEWERS)}.")
    if not MIN_SECONDS <= int(body.seconds) <= MAX_SECONDS:
        raise access.StudyError("invalid_seconds", f"seconds per case is {MIN_SECONDS} to {MAX_SECONDS}.")
    group = check_group(body.group)
    cases = lifecycle.check_cases(session, admin=admin, case_ids=body.case_ids)
    users = lifecycle.check_members(session, usernames=body.participants)
    study = RatingStudy(name=name, kind=ATTENTION, target_rule="top1", blinded=False, seed=secrets.randbelow(2**31),
                        created_by=admin.id, settings={"viewer": body.viewer, "seconds": int(body.seconds),
                                                       "group": group})
    session.add(study)
    session.flush()
    for position, case in enumerate(cases, start=1):
        session.add(StudyCase(study_id=study.id, case_id=case.id, position=position, target_id="", target_name=""))
    lifecycle.add_members(session, study=study, users=users, cases=cases)
    positions = list(range(1, len(cases) + 1))
    # Each member sees the photos in an order drawn for them (order effects — fatigue, learning what the
    # study is about — then average out), stored with the study so it never changes under a member.
    study.settings = {**(study.settings or {}), "orders": {
        str(user.id): draw_order(positions, seed=study.seed, rater_id=user.id, case_id="cases") for user in users}}
    for user in users:
        participant_for(session, user=user, group=group)
    audit.record(session, action="study_create", user=admin, ip=ip,
                 detail={"study": study.id, "kind": ATTENTION, "cases": len(cases), "viewer": body.viewer,
                         "seconds": int(body.seconds), "participants": len(users)})
    session.flush()
    return study


def participant_for(session: Session, *, user: User, group: str) -> Participant:
    """The member's participant row (one per account, created on first study; its code is random)."""
    row = session.scalar(select(Participant).where(Participant.user_id == user.id))
    if row is None:
        row = Participant(code="B" + secrets.token_hex(4).upper(), group=group, user_id=user.id)
        session.add(row)
        session.flush()
    return row


def viewing_digest(study_id: str, user_id: int, case_id: str) -> str:
    """Each (study, member, case) is viewed once: the digest is the import's unique key."""
    return hashlib.sha256(f"attention:{study_id}:{user_id}:{case_id}".encode()).hexdigest()


def member_cases(session: Session, *, study: RatingStudy, user_id: int) -> list[StudyCase]:
    """The study's cases in the order this member sees them (study order for anyone without one)."""
    cases = access.study_cases(session, study_id=study.id)
    order = ((study.settings or {}).get("orders") or {}).get(str(user_id))
    if not order or sorted(order) != [c.position for c in cases]:
        return cases
    by_position = {c.position: c for c in cases}
    return [by_position[p] for p in order]


def progress(session: Session, *, study: RatingStudy, user_id: int) -> Progress:
    cases = access.study_cases(session, study_id=study.id)
    digests = {viewing_digest(study.id, user_id, c.case_id): c.case_id for c in cases}
    seen = set(session.scalars(select(GazeImport.sha256).where(GazeImport.sha256.in_(list(digests)))))
    per_case = {digests[d]: 1 for d in seen}
    return Progress(rated=len(per_case), total=len(cases), per_case=per_case,
                    done_per_case={c.case_id: 1 for c in cases})


def is_complete(session: Session, *, study: RatingStudy) -> bool:
    members = [m.user_id for m in access.study_raters(session, study_id=study.id)]
    return all_complete(members, lambda uid: progress(session, study=study, user_id=uid))


def _samples(raw: Sequence[Sequence[float]], case: Case, limit_ms: float) -> list[pointer.Sample]:
    out = []
    for item in raw[:MAX_SAMPLES]:
        if len(item) != 3:
            raise access.StudyError("invalid_samples", "Samples are [t_ms, x, y] in photo pixels.")
        t, x, y = (float(v) for v in item)
        if not all(np.isfinite([t, x, y])):
            raise access.StudyError("invalid_samples", "Samples are finite numbers.")
        if 0 <= t <= limit_ms and 0 <= x < case.photo_width and 0 <= y < case.photo_height:
            out.append((t, x, y))
    return out


def record_viewing(session: Session, *, study: RatingStudy, user: User, position: int,
                   samples: Sequence[Sequence[float]], clicks: Sequence[Sequence[float]],
                   ip: str | None = None) -> GazeImport:
    """Store one viewing's pseudo-fixations (once: a second submission of the same case is a 409)."""
    access.require_member(session, study=study, user=user)
    if study.is_closed:
        raise access.StudyError("study_closed", "This study is closed; it takes no more viewings.", 409)
    study_case = access.study_case_at(session, study_id=study.id, position=position)
    case = session.get(Case, study_case.case_id)
    assert case is not None  # the study's cases cannot be erased (case_in_study)
    settings = study.settings or {}
    limit = float(settings.get("seconds", 10)) * 1000.0
    digest = viewing_digest(study.id, user.id, case.id)
    if session.scalar(select(GazeImport.id).where(GazeImport.sha256 == digest)) is not None:
        raise access.StudyError("already_viewed", "This case's viewing is recorded already.", 409)
    participant = participant_for(session, user=user, group=settings.get("group", "non_clinician"))
    viewer = settings.get("viewer", "window")
    if viewer == "bubbles":
        found = pointer.click_fixations(_samples(clicks, case, limit), end_ms=limit)
    else:
        diagonal = float(np.hypot(case.photo_width, case.photo_height))
        found = pointer.dwell_fixations(_samples(samples, case, limit), dispersion=0.04 * diagonal, end_ms=limit)
    row = GazeImport(format=f"browser-{viewer}", filename=f"study {study.id} case {position}", sha256=digest,
                     options={"participant": participant.code, "case": case.id, "viewer": viewer},
                     report={"samples": len(samples), "clicks": len(clicks), "fixations": len(found)},
                     fixations=len(found), study_id=study.id, created_by=user.id)
    session.add(row)
    session.flush()
    for seq, fix in enumerate(found, start=1):
        ax, ay = to_aligned(case.align_matrix, np.array([fix.x]), np.array([fix.y]))
        session.add(Fixation(import_id=row.id, participant_id=participant.id, case_id=case.id, seq=seq,
                             photo_x=fix.x, photo_y=fix.y, aligned_x=float(ax[0]), aligned_y=float(ay[0]),
                             duration_ms=fix.duration_ms, onset_ms=fix.onset_ms))
    session.flush()
    audit.record(session, action="attention_viewing", user=user, ip=ip,
                 detail={"study": study.id, "position": position, "fixations": len(found)})
    return row


def study_out(session: Session, *, study: RatingStudy, user: User) -> dict[str, Any]:
    cases = access.study_cases(session, study_id=study.id)
    settings = {k: v for k, v in (study.settings or {}).items() if k != "orders"}  # orders name account ids
    out: dict[str, Any] = {"id": study.id, "name": study.name, "kind": study.kind, "closed": study.is_closed,
                           "cases": len(cases), **settings}
    if access.is_member(session, study_id=study.id, user_id=user.id):
        mine = progress(session, study=study, user_id=user.id)
        out["progress"] = mine.to_dict()
        out["resume_position"] = mine.first_open_position(member_cases(session, study=study, user_id=user.id))
    if user.is_admin:
        members = access.study_raters(session, study_id=study.id)
        out["participants"] = len(members)
        out["complete"] = is_complete(session, study=study)
        out["progress_by_member"] = {m.user.username: progress(session, study=study, user_id=m.user_id).to_dict()
                                     for m in members}
    return out
