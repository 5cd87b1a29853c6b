"""Handing a committed job to the runner from a request: one place for every route that starts work."""

from __future__ import annotations

from fastapi import Request

from app.jobs import service as job_service
from app.web.errors import ApiError


def submit_or_fail(request: Request, job_id: str, lane: str) -> None:
    """Hand a committed job to the runner; if the broker is unreachable, fail it (and its maps) and say so.

    Failing it at once keeps the promise that asking again never returns a dead job: the job's kind's
    failure hook marks its rows failed in the same transaction.
    """
    try:
        request.app.state.jobs.submit(job_id, lane)
    except Exception as exc:  # kombu/redis raise many types; any of them means the job will never run
        job_service.finish(request.app.state.sessions, job_id, error=f"the job queue is unreachable: {exc}")
        raise ApiError(503, "queue_unavailable", "The job queue (broker) is unreachable; try again later.") from exc
