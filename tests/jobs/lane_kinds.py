"""Job kinds for the lane tests: work of a known length that reports progress like real jobs do.

Registered in the test process on import, and in a Celery worker started through :mod:`tests.jobs.lane_worker`.
``seconds`` in the payload is how long the job runs (in 0.05 s chunks, each a progress report, where batch work
yields); a ``hold`` names a file the job waits for before it starts its chunks (a test releases it); at chunk
``turn_at`` it offers its turn (app.jobs.lanes.turn_over), as the explain job does after its first map.
"""

from __future__ import annotations

import time
from pathlib import Path

from app.jobs import lanes
from app.jobs import service as job_service
from app.jobs.lanes import BATCH, INTERACTIVE
from app.jobs.models import Job
from app.jobs.registry import KINDS, WorkerContext, handler

BATCH_KIND, INTERACTIVE_KIND = "lanetest_batch", "lanetest_inter"
CHUNK_S = 0.05


def _run(job: Job, context: WorkerContext) -> None:
    hold = job.payload.get("hold")
    while hold and not Path(hold).exists():
        time.sleep(0.02)
    write = job_service.progress_writer(context.sessions, job.id, job.worker)
    seconds = float(job.payload.get("seconds", 0.2))
    chunks = max(1, round(seconds / CHUNK_S))
    for index in range(chunks):
        time.sleep(CHUNK_S)
        write((index + 1) / chunks)
        if index == job.payload.get("turn_at") and lanes.turn_over():  # like a map stored: hand over if others wait
            raise lanes.YieldTurn


if BATCH_KIND not in KINDS:
    handler(BATCH_KIND, lane=BATCH)(_run)
    handler(INTERACTIVE_KIND, lane=INTERACTIVE)(_run)
