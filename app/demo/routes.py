"""The case list's first-run offer: load the synthetic demo cohort (a job), follow its progress."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import select

from app.cases.job_access import get_job_for
from app.demo.worker import KIND, PER_SYNDROME, SYNDROMES
from app.jobs import service as job_service
from app.jobs.models import QUEUED, RUNNING, Job
from app.web.deps import CurrentUser, DbSession
from app.web.errors import NotFound
from app.web.jobs import submit_or_fail
from app.web.templating import render

pages = APIRouter(include_in_schema=False)


@pages.post("/demo-cohort")
async def start_demo_cohort(request: Request, user: CurrentUser, db: DbSession) -> Response:
    def _create() -> tuple[Job, bool]:
        running = db.scalar(select(Job).where(Job.kind == KIND, Job.owner_id == user.id,
                                              Job.state.in_((QUEUED, RUNNING))).limit(1))
        if running is not None and not job_service.is_lost(db, running):
            return running, False  # a dead one (its worker died, its queue stalled) is never handed out again
        payload = {"per_syndrome": PER_SYNDROME, "syndromes": SYNDROMES}
        job = job_service.create_job(db, kind=KIND, payload=payload, owner=user)
        db.commit()
        return job, True

    job, created = await run_in_threadpool(_create)
    if created:  # a live job is already with the runner: submitting it again could only fail it
        # a broker that is down fails the new job at once (never handed out again); off the loop: it may touch the
        # database
        await run_in_threadpool(submit_or_fail, request, job.id, job.lane)
    return render(request, "demo/_progress.html", {"job": job})


@pages.get("/demo-cohort/{job_id}")
def demo_cohort_progress(job_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    job = get_job_for(db, job_id=job_id, user=user)
    if job is None or job.kind != KIND:
        raise NotFound("job")
    response = render(request, "demo/_progress.html", {"job": job})
    if job.state == "done":
        response.headers["HX-Redirect"] = "/cases"
    return response
