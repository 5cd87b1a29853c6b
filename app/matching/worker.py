"""The ``matching_encode`` batch job: embeddings for the cases the served model version has not encoded."""

from __future__ import annotations

from app.jobs import service as job_service
from app.jobs.models import Job
from app.jobs.registry import WorkerContext, handler
from app.matching.encode import encode_missing
from app.predictions.provider import ModelUnavailable

KIND = "matching_encode"


@handler(KIND, lane="batch")  # re-encoding is batch work: an interactive job never waits behind it
def run_matching_encode(job: Job, context: WorkerContext) -> None:
    try:
        model = context.models.get()
    except ModelUnavailable as exc:
        raise RuntimeError(str(exc)) from exc
    write_progress = job_service.progress_writer(context.sessions, job.id, job.worker)
    encode_missing(context.sessions, context.photo_store, model, on_progress=write_progress)
