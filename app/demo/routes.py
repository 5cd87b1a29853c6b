"""The case list's first-run offer: load the synthetic demo cohort (a job), follow its progress."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.job_access import get_job_for
from app.demo.worker import KIND, PER_SYNDROME, SYNDROMES
from app.jobs import service as job_service
from app.jobs.models import QUEUED, RUNNING, Job
from app.web.deps import CurrentUser, DbSession
from app.web.errors import NotFound
from app.web.jobs import submit_or_fail
from app.web.templating import render

pages = APIRouter(include_in_schema=False)


def _live_job(db: Session, user: User) -> Job | None:
    """The user's demo-cohort job still queued or running; a dead one (its worker died, its queue stalled) is
    never handed out again."""
    running = db.scalar(select(Job).where(Job.kind == KIND, Job.owner_id == user.id,
                                          Job.state.in_((QUEUED, RUNNING))).limit(1))
    return running if running is not None and not job_service.is_lost(db, running) else None


@pages.get("/demo-cohort/current")
def current_demo_cohort(request: Request, user: CurrentUser, db: DbSession) -> Response:
    """The case list asks on load: a demo cohort still loading shows its progress again after a refresh (the
    list only offered it while empty, and the cases arriving made the list non-empty). Empty when none runs."""
    job = _live_job(db, user)
    if job is None:
        return Response(status_code=200, headers={"Cache-Control": "no-store"})
    # its own id: an empty list's offer (id demo-offer) may be on the page too, and ids must stay unique
    return render(request, "demo/_progress.html", {"job": job, "element_id": "demo-live-progress"})


@pages.post("/demo-cohort")
async def start_demo_cohort(request: Request, user: CurrentUser, db: DbSession) -> Response:
    def _create() -> tuple[Job, bool]:
        running = _live_job(db, user)
        if running is not None:
            return running, False
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
    # the polling element keeps its id (htmx names it in HX-Target): the offer's, or the refreshed list's own
    element_id = "demo-live-progress" if request.headers.get("hx-target") == "demo-live-progress" else "demo-offer"
    response = render(request, "demo/_progress.html", {"job": job, "element_id": element_id})
    if job.state == "done":
        response.headers["HX-Redirect"] = "/cases"
    return response
