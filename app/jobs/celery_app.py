"""The Celery application used by ``gestaltlens worker`` (the scale-out job runner).

A task carries only a job id: the job's payload, state and progress live in the database, which every
worker and web process share. Each worker process builds one :class:`WorkerContext` (database sessions,
photo store, the model loaded once) when it starts, with the factory that :mod:`app.tasks` sets, and keeps
it, with its private explainer copy of the network, for every job it runs.
The pool is ``prefork`` with the concurrency the operator chooses.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from celery import Celery
from celery.signals import worker_process_init

from app.jobs.lanes import BATCH, LANES, intra_op_threads, queue_name, set_torch_threads
from app.jobs.registry import WorkerContext
from app.settings import Settings, get_settings

RUN_JOB_TASK = "gestaltlens.run_job"
#: The lanes a ``gestaltlens worker`` serves, for its pool processes (set by the command).
WORKER_LANES_ENV = "GESTALTLENS_WORKER_LANES"
_context: WorkerContext | None = None
_context_factory: Callable[[Settings], WorkerContext] | None = None


def set_context_factory(factory: Callable[[Settings], WorkerContext]) -> None:
    """How a worker process builds its context: set from the top (:mod:`app.tasks`), which knows the domains'
    photo store and model provider; this package does not."""
    global _context_factory
    _context_factory = factory


def worker_context() -> WorkerContext:
    global _context
    if _context is None:
        if _context_factory is None:
            raise RuntimeError("no worker context factory: import app.tasks before running jobs")
        _context = _context_factory(get_settings())
    return _context


def _preload(**_: object) -> None:
    """Load the model when the worker process starts, not in its first job. A worker serving only the batch lane
    runs torch on one core fewer (as the inline runner's batch thread does), leaving one to interactive work."""
    lanes = tuple(os.environ.get(WORKER_LANES_ENV, "").split(","))
    if lanes == (BATCH,):
        set_torch_threads(intra_op_threads(BATCH, os.cpu_count() or 1))
    if _context_factory is None:
        return
    with contextlib.suppress(RuntimeError):  # each job then fails with the reason, which the page shows
        worker_context().model()


def worker_queues(settings: Settings, lanes: tuple[str, ...] = LANES) -> list[str]:
    """The broker queues a worker serving ``lanes`` consumes (one per lane)."""
    return [queue_name(settings.job_queue, lane) for lane in lanes]


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("gestaltlens", broker=settings.broker_url, backend=None)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=queue_name(settings.job_queue, BATCH),  # each job is sent to its lane's queue
        # A web request publishing a job must not hang on a dead broker: retry briefly, then fail the job.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        # A worker killed with -9 never acknowledges its message; Redis hands it out again only after the
        # visibility timeout (kombu's default: an hour, swept every ~100 s). Ours is minutes, swept often, so
        # the job is taken over within job_visibility_timeout_s plus one sweep (see README "Jobs").
        broker_transport_options={
            "visibility_timeout": settings.job_visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, int(settings.job_visibility_timeout_s // 4))),
            "unacked_restore_throttle": 1,
            "unacked_mutex_expire": max(5, int(settings.job_visibility_timeout_s)),
        },
        broker_connection_timeout=4,
    )

    @celery.task(name=RUN_JOB_TASK, bind=True, max_retries=20)
    def run_job_task(self, job_id: str) -> None:
        from app.jobs.execute import TryLater, run_message
        from app.jobs.service import JobBusy, lease

        try:
            handed = run_message(job_id, worker_context())  # the lane's next job in the fair order (often this one)
            if handed is not None:  # it handed its turn over after its first result: its message goes to the back
                self.app.send_task(RUN_JOB_TASK, args=[handed.id],
                                   queue=queue_name(get_settings().job_queue, handed.lane))
        except JobBusy as exc:  # a re-delivered copy while the first worker still works: look again later
            raise self.retry(countdown=lease().total_seconds(), exc=exc) from exc
        except TryLater as exc:  # database or disk failed under the job: offer it again once the lease is over
            raise self.retry(countdown=lease().total_seconds() + 1, exc=exc) from exc

    return celery


worker_process_init.connect(_preload, weak=False)
