"""Two runners behind one interface (``start``, ``submit``, ``stop``), chosen by GESTALTLENS_JOB_RUNNER.

``inline`` (the embedded default) is one worker thread inside the web process: FIFO, one model instance,
nothing else to run. ``celery`` only publishes job ids to the Redis broker; ``gestaltlens worker``
processes on any number of machines claim and run them against the same database.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Protocol

from kombu import pools as kombu_pools
from sqlalchemy.exc import OperationalError

from app.jobs import service
from app.jobs.celery_app import RUN_JOB_TASK, make_celery
from app.jobs.execute import TryLater, run_job
from app.jobs.registry import WorkerContext
from app.settings import Settings

log = logging.getLogger("gestaltlens.jobs")


class JobRunner(Protocol):
    def start(self) -> None: ...
    def submit(self, job_id: str) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...


class InlineRunner:
    """A daemon thread working through a FIFO queue of job ids.

    At start it first re-queues (or fails) jobs its previous process left ``running`` and picks up every
    queued job, so a restart never leaves work stuck.
    """

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        self._stopping.clear()
        try:
            with self.context.sessions() as session:
                pending, held = service.recover_interrupted(session)
        except OperationalError:  # the database is down: run new jobs once it is back; the next start recovers
            log.error("inline runner: database unreachable at start-up; interrupted jobs are recovered next start")
            pending, held = [], []
        for job_id in pending:
            self._queue.put(job_id)
        for job_id in held:  # look again once the lease has run out
            timer = threading.Timer(service.lease().total_seconds() + 1, self.submit, args=(job_id,))
            timer.daemon = True
            timer.start()
        self._thread = threading.Thread(target=self._loop, name="gestaltlens-jobs", daemon=True)
        self._thread.start()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._stopping.set()  # jobs still queued stay queued (no attempt used) and run after the restart
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while (job_id := self._queue.get()) is not None and not self._stopping.is_set():
            try:
                run_job(job_id, self.context)
            except service.JobBusy:
                log.warning("job %s is running in another process; this runner leaves it", job_id)
            except TryLater:  # database or disk failed under it: never dropped, offered again after the lease
                log.exception("inline runner: job %s is offered again in %.0f s", job_id, self._retry_s())
                self._later(job_id)
            except Exception:  # a broken database connection must not kill the thread
                log.exception("inline runner could not run job %s", job_id)
                self._later(job_id)

    @staticmethod
    def _retry_s() -> float:
        return service.lease().total_seconds() + 1

    def _later(self, job_id: str) -> None:
        if self._stopping.is_set():
            return
        timer = threading.Timer(self._retry_s(), self.submit, args=(job_id,))
        timer.daemon = True
        timer.start()


class CeleryRunner:
    """Publishes job ids to the broker; the work happens in ``gestaltlens worker`` processes."""

    def __init__(self, settings: Settings) -> None:
        self.celery = make_celery(settings)

    def start(self) -> None:
        """Nothing to recover here: with late acknowledgement the broker re-delivers a dead worker's job."""

    def submit(self, job_id: str) -> None:
        self.celery.send_task(RUN_JOB_TASK, args=[job_id])

    def stop(self, timeout: float = 5.0) -> None:
        """Close this app's broker connections. kombu keeps one connection pool (and one producer pool) per
        broker address for the whole process and hands it to every Celery app on that address; a closed pool
        left in that registry made the next app in the process fail with "Acquire on closed pool", so the
        closed pools are taken out of it."""
        connection = self.celery.connection_for_write()
        self.celery.pool.force_close_all()
        for group in (kombu_pools.producers, kombu_pools.connections):
            with contextlib.suppress(KeyError):
                del group[connection]


def make_runner(settings: Settings, context: WorkerContext) -> JobRunner:
    if settings.job_runner == "celery":
        return CeleryRunner(settings)
    return InlineRunner(context)
