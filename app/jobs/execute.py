"""Run one job by id: claim it, dispatch to its kind's handler, record the outcome. Both runners call this.

Whatever fails underneath, a job ends (done, failed, or handed back to be retried): a database that vanishes
while a job runs, or a disk that is full when it is claimed, must not leave it ``running`` or ``queued`` with
nobody working on it (issue 20). The outcome is therefore written with retries for ``RECORD_RETRY_S``; when the
database stays away longer, or the claim itself cannot be written, :class:`TryLater` tells the runner to
offer the job again after the lease, when a claim takes it over (or gives up after three attempts).
"""

from __future__ import annotations

import logging
import socket
import time

from sqlalchemy import exc as sa_exc
from sqlalchemy import select

from app.jobs import lanes, service
from app.jobs.lanes import INTERACTIVE
from app.jobs.models import QUEUED, Job
from app.jobs.registry import KINDS, WorkerContext

log = logging.getLogger("gestaltlens.jobs")

#: Failures of the infrastructure, not of the job: the database unreachable or its pool exhausted, the disk full.
TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
             OSError)
#: How long the outcome of a job is retried before the job is handed back to be run again.
RECORD_RETRY_S = 60.0


class TryLater(RuntimeError):
    """The job could not be claimed or its outcome recorded (database or disk): offer it again later."""


def _record(context: WorkerContext, job_id: str, *, error: str | None, worker: str | None) -> None:
    delay, started = 0.25, time.monotonic()
    while True:
        try:
            service.finish(context.sessions, job_id, error=error, worker=worker)
            return
        except TRANSIENT as exc:
            if time.monotonic() - started + delay > RECORD_RETRY_S:
                raise TryLater(f"job {job_id}: its outcome could not be recorded ({type(exc).__name__})") from exc
            log.warning("job %s: recording its outcome failed (%s); retrying in %.1f s", job_id,
                        type(exc).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def run_job(job_id: str, context: WorkerContext) -> None:
    """Run this one job (claimed first); the lane's order is not consulted (tests, and jobs run by hand)."""
    try:
        job = service.claim(context.sessions, job_id)
    except TRANSIENT as exc:
        raise TryLater(f"job {job_id} could not be claimed ({type(exc).__name__}: {exc})") from exc
    if job is None:
        log.info("job %s is not queued (finished, cancelled with its case, or taken); skipped", job_id)
        return
    _run_claimed(job, context)


def run_next(lane: str, context: WorkerContext, *, own: str | None = None) -> Job | None:
    """Claim and run the job whose turn it is in ``lane`` (:func:`app.jobs.service.claim_next`); returns it,
    or None when the lane has nothing to run. ``own``: the job a broker message named. A job that handed its
    turn over is returned with ``state`` set to ``queued`` (it needs a new broker message on Celery)."""
    try:
        job = service.claim_next(context.sessions, lane, own=own)
    except TRANSIENT as exc:
        raise TryLater(f"lane {lane}: no job could be claimed ({type(exc).__name__}: {exc})") from exc
    if job is not None and _run_claimed(job, context):
        job.state = QUEUED
    return job


def run_message(job_id: str, context: WorkerContext) -> Job | None:
    """A broker message for ``job_id``: run the job whose turn it is in that job's lane. Returns a job that
    handed its turn over (the caller publishes a message for it again), else None."""
    try:
        with context.sessions() as session:
            lane = session.scalar(select(Job.lane).where(Job.id == job_id))
    except TRANSIENT as exc:
        raise TryLater(f"job {job_id}: its lane could not be read ({type(exc).__name__})") from exc
    if lane is None:  # erased with its case: other jobs have their own messages
        return None
    ran = run_next(lane, context, own=job_id)
    return ran if ran is not None and ran.state == QUEUED else None


def _run_claimed(job: Job, context: WorkerContext) -> bool:
    """Run a claimed job to its outcome; True when it handed its turn over instead (back in its lane's queue)."""
    job_id = job.id
    registered = KINDS.get(job.kind)
    if registered is None:  # the process did not import app.tasks, or the kind is gone
        _record(context, job_id, error=f"no handler for job kind {job.kind!r}", worker=job.worker)
        return False
    may_hand_over = job.lane == INTERACTIVE and not (job.payload or {}).get(service.HANDED_OVER)
    asked = [False]

    def check() -> bool:  # once per job: a map is stored and a newer job of the lane has shown nothing yet
        if asked[0] or not may_hand_over:
            return False
        asked[0] = True
        return service.others_waiting(context.sessions, job)

    token = lanes.set_turn_check(check)
    # A batch job outside the inline runner (which has its own gate) yields to interactive work on this host.
    host = socket.gethostname()
    yielding = lanes.push_checkpoint(lanes.HostYield(lambda: service.interactive_running_on(context.sessions, host))) \
        if job.lane == lanes.BATCH and not lanes.has_checkpoint() else None
    try:
        registered.run(job, context)
    except lanes.YieldTurn:
        if service.requeue(context.sessions, job_id, job.worker):
            log.info("job %s handed its turn over after its first result", job_id)
            return True
        _record(context, job_id, error=None, worker=job.worker)
        return False
    except Exception as exc:  # the job fails with a message; the worker lives on
        log.exception("job %s (%s) failed", job_id, job.kind)
        _record(context, job_id, error=str(exc) or type(exc).__name__, worker=job.worker)
        return False
    finally:
        lanes.reset_turn_check(token)
        if yielding is not None:
            lanes.pop_checkpoint(yielding)
    _record(context, job_id, error=None, worker=job.worker)
    return False
