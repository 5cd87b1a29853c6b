"""Run one job by id: claim it, dispatch to its kind's handler, record the outcome. Both runners call this."""

from __future__ import annotations

import logging

from app.jobs import service
from app.jobs.registry import KINDS, WorkerContext

log = logging.getLogger("gestaltlens.jobs")


def run_job(job_id: str, context: WorkerContext) -> None:
    job = service.claim(context.sessions, job_id)
    if job is None:
        log.info("job %s is not queued (finished, cancelled with its case, or taken); skipped", job_id)
        return
    registered = KINDS.get(job.kind)
    if registered is None:  # the process did not import app.tasks, or the kind is gone
        service.finish(context.sessions, job_id, error=f"no handler for job kind {job.kind!r}", worker=job.worker)
        return
    try:
        registered.run(job, context)
    except Exception as exc:  # the job fails with a message; the worker lives on
        log.exception("job %s (%s) failed", job_id, job.kind)
        service.finish(context.sessions, job_id, error=str(exc) or type(exc).__name__, worker=job.worker)
        return
    service.finish(context.sessions, job_id, worker=job.worker)
