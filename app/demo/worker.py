"""The ``demo_cohort`` job: :func:`app.cohorts.demo.import_demo_cohort` for the user who asked, in the
background (54 generated faces through detection, alignment and ranking take about a minute on 2 cores,
far too long for a request)."""

from __future__ import annotations

from app.auth.models import User
from app.cohorts.demo import import_demo_cohort
from app.jobs import service as job_service
from app.jobs.models import Job
from app.jobs.registry import WorkerContext, handler

KIND = "demo_cohort"
PER_SYNDROME = 6  # 5 meet the cohort floor; one more so a single erasure does not break the demo
SYNDROMES: list[str] | None = None  # every synthetic syndrome of the model


@handler(KIND)
def run_demo_cohort(job: Job, context: WorkerContext) -> None:
    model = context.model()
    write_progress = job_service.progress_writer(context.sessions, job.id, job.worker)
    with context.sessions() as session:
        owner = session.get(User, job.owner_id) if job.owner_id is not None else None
        if owner is None or not owner.is_active:
            raise RuntimeError("the user who asked for the demo cohort no longer exists or is deactivated")
        import_demo_cohort(session, owner=owner, store=context.photo_store, model=model,
                           per_syndrome=int(job.payload.get("per_syndrome", PER_SYNDROME)),
                           syndromes=job.payload.get("syndromes"),
                           on_progress=lambda done, total: write_progress(done / max(1, total)))
