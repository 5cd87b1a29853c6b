"""Two runners behind one interface (``start``, ``submit``, ``stop``), chosen by GESTALTLENS_JOB_RUNNER.

``inline`` (the embedded default) is one worker thread per lane inside the web process: nothing else to run.
``celery`` only publishes job ids to the lane's queue on the Redis broker; ``gestaltlens worker --lanes ...``
processes on any number of machines claim and run them against the same database. Both take the next job
of a lane in the fair order (:mod:`app.jobs.lanes`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
from typing import Protocol

from kombu import pools as kombu_pools
from sqlalchemy.exc import OperationalError

from app.jobs import execute, lanes, service
from app.jobs.celery_app import RUN_JOB_TASK, make_celery
from app.jobs.execute import TryLater
from app.jobs.registry import WorkerContext
from app.settings import Settings

log = logging.getLogger("gestaltlens.jobs")


class JobRunner(Protocol):
    def start(self) -> None: ...
    def submit(self, job_id: str, lane: str) -> None: ...
    def stop(self, timeout: float = 5.0) -> None: ...


class InlineRunner:
    """One worker thread per lane inside the web process (:mod:`app.jobs.lanes` says how they share the cores).

    Each thread takes the job whose turn it is in its lane from the database (the fair order), so a
    restart never loses work: at start the runner re-queues (or fails) jobs its previous process left
    ``running``, and the threads then find every queued job. ``submit`` only wakes the lane's thread; the
    threads also look every :data:`POLL_S` seconds, which also offers again a job whose claim or outcome
    could not be written (the database or disk failed under it) once its lease has passed.
    """

    #: How often an idle lane thread looks for work it was not told about (a retry, another process's job).
    POLL_S = 2.0

    def __init__(self, context: WorkerContext, cores: int | None = None) -> None:
        self.context = context
        self.cores = cores or os.cpu_count() or 1
        self._wake = {lane: threading.Event() for lane in lanes.LANES}
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.gate = lanes.InteractiveGate()

    def start(self) -> None:
        self._stopping.clear()
        try:
            with self.context.sessions() as session:
                service.recover_interrupted(session)
        except OperationalError:  # the database is down: the threads look again every POLL_S
            log.error("inline runner: database unreachable at start-up; interrupted jobs are recovered next start")
        # The batch thread sets its torch threads first; threads started later inherit the last value set.
        for lane in (lanes.BATCH, lanes.INTERACTIVE):
            ready = threading.Event()
            context = self.context if lane == lanes.INTERACTIVE else dataclasses.replace(self.context, cache={})
            thread = threading.Thread(target=self._loop, args=(lane, context, ready), name=f"gestaltlens-{lane}",
                                      daemon=True)
            thread.start()
            ready.wait(10)
            self._threads.append(thread)

    def submit(self, job_id: str, lane: str) -> None:
        if lane == lanes.INTERACTIVE:
            self.gate.submitted()  # batch work yields from now until the interactive thread has caught up
        self._wake[lanes.check_lane(lane)].set()

    def stop(self, timeout: float = 5.0) -> None:
        if not self._threads:
            return
        self._stopping.set()  # jobs still queued stay queued (no attempt used) and run after the restart
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def _loop(self, lane: str, context: WorkerContext, ready: threading.Event) -> None:
        lanes.set_torch_threads(lanes.intra_op_threads(lane, self.cores))
        if lane == lanes.BATCH:
            lanes.set_checkpoint(self._yield_to_interactive)
        ready.set()
        interactive = lane == lanes.INTERACTIVE
        while not self._stopping.is_set():
            if interactive:
                self.gate.running(True)
            try:
                ran = execute.run_next(lane, context)
            except service.JobBusy:
                ran = None
            except TryLater:  # database or disk failed under it: never dropped, offered again after the lease
                log.exception("inline runner: lane %s is looked at again in %.0f s", lane, self.POLL_S)
                ran = None
            except Exception:  # a broken database connection must not kill the thread
                log.exception("inline runner: lane %s could not run its next job", lane)
                ran = None
            if ran is not None:
                continue
            if interactive:
                self.gate.running(False)
                self.gate.caught_up()
            self._wake[lane].wait(self.POLL_S)
            self._wake[lane].clear()

    def _yield_to_interactive(self) -> None:
        if self.gate.busy:
            waited = self.gate.wait_idle()
            log.debug("batch work yielded %.2f s to interactive work", waited)


class CeleryRunner:
    """Publishes job ids to the broker; the work happens in ``gestaltlens worker`` processes."""

    def __init__(self, settings: Settings) -> None:
        self.celery = make_celery(settings)
        self.queue = settings.job_queue

    def start(self) -> None:
        """Nothing to recover here: with late acknowledgement the broker re-delivers a dead worker's job."""

    def submit(self, job_id: str, lane: str) -> None:
        """Publish to the lane's queue; the worker that takes the message runs the lane's next job in the fair
        order (app.jobs.execute.run_message)."""
        self.celery.send_task(RUN_JOB_TASK, args=[job_id], queue=lanes.queue_name(self.queue, lane))

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
