"""Two lanes of background work, and the order within each.

*Interactive*: work a person waits for at a page (a case's explanation panel, a study case's maps, a Compare).
*Batch*: everything else (evaluations, cohorts, the demo import, re-encodings). Each job kind declares its lane
when it registers (:func:`app.jobs.registry.handler`); the job row records it, so every runner and page agrees.

Within a lane the order is **fair**, not first-come: a job's turn is how many jobs its owner already has
running or ahead of it in the lane, then its age. One user's twenty queued panels therefore do not hold back
another user's first one; with one job each it is plain FIFO. The order is computed from the database at the
moment a worker picks its next job, so it holds for the inline runner and for every Celery worker alike.

How the inline runner shares the cores (the decision, measured in ``bench/bench_lanes.py``):

* one worker thread per lane, so interactive work never queues behind a batch job;
* the interactive thread runs with every core as torch intra-op threads, the batch thread with one fewer
  (at least one): torch sets intra-op threads per calling thread (OpenMP's per-thread setting), so the two
  threads choose independently;
* batch work *yields*: at every progress report (its chunks: a face, a method, a case) the batch thread
  waits while interactive work is running or queued, for at most :data:`YIELD_MAX_S` per report, so an
  endless stream of interactive jobs slows batch work but never stops it. Yielding rather than splitting the
  cores evenly is what keeps a clinician's first map fast: on 2 cores a split would halve its speed for the
  whole time any batch job runs.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

INTERACTIVE, BATCH = "interactive", "batch"
LANES = (INTERACTIVE, BATCH)
#: The longest a batch job waits at one progress report for interactive work to finish.
YIELD_MAX_S = 15.0


def check_lane(lane: str) -> str:
    if lane not in LANES:
        raise ValueError(f"unknown lane {lane!r}; the lanes are {', '.join(LANES)}")
    return lane


def parse_lanes(text: str) -> tuple[str, ...]:
    """``"interactive,batch"`` → the lanes, in that order; a clear error for an unknown one."""
    lanes = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not lanes:
        raise ValueError("name at least one lane: interactive, batch")
    return tuple(check_lane(lane) for lane in lanes)


def queue_name(base: str, lane: str) -> str:
    """The broker queue of a lane, named from GESTALTLENS_JOB_QUEUE: ``gestaltlens.interactive``."""
    return f"{base}.{check_lane(lane)}"


@dataclass(frozen=True)
class Waiting:
    """What the fair order needs of a job: its id, owner, age, and whether it is already running."""

    id: str
    owner_id: int | None
    created_at: datetime
    running: bool = False


def fair_order(jobs: Iterable[Waiting]) -> list[str]:
    """The ids of the *queued* jobs among ``jobs`` in the order a lane serves them.

    A job's turn is the number of jobs of the same owner running or older than it in the lane; ties go to the
    older job. Jobs without an owner (system work) form one owner of their own.
    """
    items = sorted(jobs, key=lambda j: (j.created_at, j.id))
    held: dict[int | None, int] = {}
    for job in items:
        if job.running:
            held[job.owner_id] = held.get(job.owner_id, 0) + 1
    turns: list[tuple[int, datetime, str]] = []
    for job in items:
        if job.running:
            continue
        turn = held.get(job.owner_id, 0)
        held[job.owner_id] = turn + 1
        turns.append((turn, job.created_at, job.id))
    return [job_id for _, _, job_id in sorted(turns)]


# --- sharing the cores between the inline runner's two lane threads ---------------------------------------

_checkpoint: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("lane_checkpoint",
                                                                                        default=None)


def checkpoint() -> None:
    """Called at every progress report of a job (app.jobs.service.progress_writer): a batch job run by the
    inline runner waits here while interactive work is waiting or running. Elsewhere it does nothing."""
    wait = _checkpoint.get()
    if wait is not None:
        wait()


def set_checkpoint(wait: Callable[[], None] | None) -> None:
    """Install the current thread's checkpoint (each runner thread starts with an empty context)."""
    _checkpoint.set(wait)


class InteractiveGate:
    """Whether interactive work is in hand in this process (submitted and not yet served, or running), so
    batch work can yield to it."""

    def __init__(self) -> None:
        self._pending = 0
        self._running = False
        self._changed = threading.Condition()

    def submitted(self) -> None:
        with self._changed:
            self._pending += 1

    def caught_up(self) -> None:
        """The interactive thread looked and found nothing queued: every submission so far is served."""
        with self._changed:
            self._pending = 0
            self._changed.notify_all()

    def running(self, flag: bool) -> None:
        with self._changed:
            self._running = flag
            self._changed.notify_all()

    @property
    def busy(self) -> bool:
        return self._pending > 0 or self._running

    def wait_idle(self, limit_s: float = YIELD_MAX_S) -> float:
        """Block while interactive work is in hand, at most ``limit_s``; returns the seconds waited."""
        started = time.monotonic()
        with self._changed:
            self._changed.wait_for(lambda: not self.busy, timeout=limit_s)
        return time.monotonic() - started


def intra_op_threads(lane: str, cores: int) -> int:
    """Torch intra-op threads of a lane's worker thread on ``cores`` cores (see the module's docstring)."""
    return max(1, cores) if lane == INTERACTIVE else max(1, cores - 1)


def set_torch_threads(count: int) -> None:
    """Set this thread's torch intra-op threads. Threads started later inherit the last value set, so the
    inline runner sets the batch thread's first and the interactive thread's (every core) last."""
    import torch  # here, not at the top: the jobs layer itself does not need torch

    torch.set_num_threads(count)


def lanes_text(lanes: Sequence[str]) -> str:
    return ",".join(lanes)
