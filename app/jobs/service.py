"""Moving jobs through their states. Every transition is a short committed transaction of its own, so a
page polling from another process sees progress while the work runs."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import and_, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.jobs import lanes
from app.jobs.models import DONE, FAILED, FINISHED, QUEUED, RUNNING, Job
from app.jobs.outlook import Outlook, duration_s, lane_order
from app.jobs.registry import failure_hook, lane_of
from app.settings import get_settings

log = logging.getLogger("gestaltlens.jobs")

#: A job interrupted this many times (the web process or worker died while it ran) is failed, not retried:
#: a job that crashes its worker must not crash it forever.
MAX_ATTEMPTS = 3
#: Progress is written at most this often: each write is a commit, and the pages poll once a second.
PROGRESS_INTERVAL_S = 0.4


class Owner(Protocol):
    """Who asked for a job (a :class:`app.auth.models.User`): only the id is stored."""

    id: int


def create_job(session: Session, *, kind: str, payload: dict[str, Any], owner: Owner | None,
               case_id: str | None = None, estimated_s: float | None = None) -> Job:
    """A queued job in its kind's lane. ``estimated_s``: the seconds the domain's cost model expects it to take
    (None when the kind has none: its recent jobs' durations stand in, app.jobs.outlook)."""
    job = Job(kind=kind, payload=payload, owner_id=owner.id if owner else None, case_id=case_id,
              lane=lane_of(kind), estimated_s=None if estimated_s is None else float(estimated_s))
    session.add(job)
    session.flush()
    return job


#: A queued job nobody has claimed for this long while no job at all has moved is presumed lost (a broker
#: restart dropped its message): asking for the same work again creates a new job instead of waiting on it
#: forever. A long queue that moves is not lost.
STALE_AFTER = timedelta(minutes=30)


def lease() -> timedelta:
    """A running job's progress writes are its heartbeat. One whose heartbeat is older than this may be taken
    over by a re-delivered copy (its worker died) and counts as lost; a fresher one is still being worked on.
    Set by GESTALTLENS_JOB_LEASE_S (default 90 s): one setting per process, read from the environment, so
    the web app and every worker agree on it."""
    return timedelta(seconds=get_settings().job_lease_s)


def is_lost(session: Session, job: Job | None) -> bool:
    """True when nothing will ever finish this job: it is gone or finished; it runs without a heartbeat for
    the lease (its worker died: a re-delivered copy may still take it over, but asking again must not wait
    for that); or it has waited STALE_AFTER in a queue that does not move."""
    if job is None or job.state in FINISHED:
        return True
    if job.state == RUNNING:
        return job.updated_at < utcnow() - lease()
    horizon = utcnow() - STALE_AFTER
    if job.updated_at >= horizon:
        return False
    moving = session.scalar(select(Job.id).where(Job.started_at.is_not(None), Job.updated_at >= horizon).limit(1))
    return moving is None


def job_out(job: Job, outlook: Outlook | None = None) -> dict[str, Any]:
    """A job as the API shows it. ``outlook`` (app.jobs.outlook.outlook_for) adds where it stands in its lane:
    ``position`` (0 = next), ``ahead``, the estimated start and end; a finished job shows its real
    ``duration_s`` beside the ``estimated_s`` it was queued with."""
    waiting = outlook.as_dict() if outlook is not None else {
        "position": None, "ahead": 0, "expected_s": None, "estimated_start_at": None, "estimated_end_at": None}
    return {
        "id": job.id,
        "kind": job.kind,
        "lane": job.lane,
        "state": job.state,
        **{k: v for k, v in waiting.items() if k != "lane"},
        "estimated_s": None if job.estimated_s is None else round(float(job.estimated_s), 3),
        "duration_s": None if (d := duration_s(job)) is None else round(d, 2),
        "progress": round(float(job.progress), 4),
        "error": job.error,
        "case_id": job.case_id,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


class JobBusy(RuntimeError):
    """The job is running elsewhere with a live heartbeat: try again after the lease."""


def claim(sessions: sessionmaker[Session], job_id: str) -> Job | None:
    """Mark a queued job running, or take over a running one whose heartbeat stopped; None if there is
    nothing to do (finished, erased). Raises :class:`JobBusy` while another worker's heartbeat is fresh.

    The state check and the write are one UPDATE, so two workers handed the same job cannot both run it.
    """
    with sessions() as session:
        now = utcnow()
        claimable = or_(Job.state == QUEUED, and_(Job.state == RUNNING, Job.updated_at < now - lease()))
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(state=RUNNING, started_at=now, updated_at=now, attempts=Job.attempts + 1,
                    worker=f"{socket.gethostname()}:{os.getpid()}", progress=0.0, error=None)
        ).rowcount
        session.commit()
        if not claimed:
            if session.scalar(select(Job.state).where(Job.id == job_id)) == RUNNING:
                raise JobBusy(f"job {job_id} is running elsewhere")
            return None
        job = session.get(Job, job_id)
        if job is not None and job.attempts > MAX_ATTEMPTS:
            _finish(session, job, FAILED, f"gave up after {MAX_ATTEMPTS} interrupted attempts")
            return None
        if job is not None:
            session.expunge(job)
        return job


def claim_next(sessions: sessionmaker[Session], lane: str, *, own: str | None = None) -> Job | None:
    """Claim the job ``lane`` should run next, or None if there is none.

    First a running job of the lane whose heartbeat stopped (its worker died: take it over), then the queued
    jobs in the fair order (:func:`app.jobs.lanes.fair_order`). A broker message names one job (``own``) but
    may run another: the messages of a lane and its jobs stay one-to-one, and whichever message comes first
    runs the job whose turn it is. When nothing is claimable while ``own`` still runs elsewhere with a fresh
    heartbeat, :class:`JobBusy` asks for this message to be offered again after the lease (if that worker
    died, the next look takes its job over).
    """
    with sessions() as session:
        horizon = utcnow() - lease()
        stale = list(session.scalars(select(Job.id).where(Job.lane == lane, Job.state == RUNNING,
                                                          Job.updated_at < horizon).order_by(Job.updated_at)))
        queued = lane_order(session, lane)
    for job_id in [*stale, *queued]:
        try:
            job = claim(sessions, job_id)
        except JobBusy:
            continue
        if job is not None:
            return job
    if own is not None:
        with sessions() as session:
            if session.scalar(select(Job.state).where(Job.id == own)) == RUNNING:
                raise JobBusy(f"job {own} is running elsewhere")
    return None


#: The payload key marking a job that has handed its turn over once (app.jobs.lanes.turn_over): it runs to the
#: end when next claimed, and it no longer counts as waiting for a first result.
HANDED_OVER = "_handed_over"


def others_waiting(sessions: sessionmaker[Session], job: Job) -> bool:
    """Whether another job of ``job``'s lane is queued that has never run (so nothing of it is shown yet)."""
    with sessions() as session:
        waiting = session.scalars(select(Job.payload).where(
            Job.lane == job.lane, Job.state == QUEUED, Job.id != job.id, Job.attempts == 0).limit(20)).all()
    return any(not (payload or {}).get(HANDED_OVER) for payload in waiting)


def interactive_running_on(sessions: sessionmaker[Session], host: str) -> bool:
    """Whether an interactive job runs on ``host`` now (a running job's ``worker`` is ``host:pid``)."""
    with sessions() as session:
        return session.scalar(select(Job.id).where(Job.lane == lanes.INTERACTIVE, Job.state == RUNNING,
                                                   Job.worker.like(f"{host}:%")).limit(1)) is not None


def requeue(sessions: sessionmaker[Session], job_id: str, worker: str | None) -> bool:
    """A running job hands its turn over: back to ``queued`` with its progress, its attempt not counted, marked so
    it runs to the end next time. Only while ``worker`` still holds it; returns whether it was requeued."""
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None or job.state != RUNNING or job.worker != worker:
            return False
        job.state, job.worker, job.updated_at = QUEUED, None, utcnow()
        job.attempts = max(0, job.attempts - 1)
        job.payload = {**(job.payload or {}), HANDED_OVER: True}
        session.commit()
        return True


def _finish(session: Session, job: Job, state: str, error: str | None) -> None:
    job.state = state
    job.error = error
    job.finished_at = job.updated_at = utcnow()
    if state == FAILED and (hook := failure_hook(job.kind)) is not None:
        hook(session, job)
    if state == DONE:
        job.progress = 1.0
    session.commit()


def finish(sessions: sessionmaker[Session], job_id: str, *, error: str | None = None,
           worker: str | None = None) -> None:
    """Record the outcome. With ``worker``, only while that worker still holds the job: a worker whose lease
    ran out (another took the job over) must not overwrite the new holder's work."""
    with sessions() as session:
        job = session.get(Job, job_id)
        if job is None or (worker is not None and (job.worker != worker or job.state != RUNNING)):
            return
        _finish(session, job, FAILED if error else DONE, error)


def progress_writer(sessions: sessionmaker[Session], job_id: str, worker: str | None = None
                    ) -> Callable[[float], None]:
    """A throttled ``on_progress`` callback that stores 0..1 progress for a running job (and is its heartbeat);
    with ``worker``, only while that worker holds the job."""
    last = [0.0]

    def write(fraction: float) -> None:
        lanes.checkpoint()  # a batch job run inline yields here to interactive work (app.jobs.lanes)
        now = time.monotonic()
        if now - last[0] < PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        last[0] = now
        with sessions() as session:
            held = (Job.worker == worker) if worker is not None else true()
            session.execute(
                update(Job).where(Job.id == job_id, Job.state == RUNNING, held)
                .values(progress=max(0.0, min(1.0, float(fraction))), updated_at=utcnow())
            )
            session.commit()

    return write


def recover_interrupted(session: Session) -> tuple[list[str], list[str]]:
    """Start-up of the inline runner: jobs left ``running`` without a heartbeat for a lease go back in the
    queue (or fail once they have used their attempts). Returns (every queued job id, oldest first; the
    running jobs whose heartbeat is still fresh — to be offered again after the lease, when ``claim`` takes
    them over if their worker died or leaves them to it if it lives)."""
    fresh = list(session.scalars(select(Job.id).where(Job.state == RUNNING, Job.updated_at >= utcnow() - lease())))
    for job in session.scalars(select(Job).where(Job.state == RUNNING, Job.updated_at < utcnow() - lease())):
        if job.attempts >= MAX_ATTEMPTS:
            job.state, job.error = FAILED, f"interrupted {job.attempts} times; not retried"
            job.finished_at = utcnow()
            if (hook := failure_hook(job.kind)) is not None:
                hook(session, job)
        else:
            job.state, job.error = QUEUED, None
            log.warning("job %s was interrupted while running; queued again", job.id)
        job.updated_at = utcnow()
    session.commit()
    queued = list(session.scalars(select(Job.id).where(Job.state == QUEUED).order_by(Job.created_at, Job.id)))
    return queued, fresh
