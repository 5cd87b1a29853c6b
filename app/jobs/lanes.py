"""Two lanes of background work, and the order within each.

*Interactive*: work a person waits for at a page (a case's explanation panel, a study case's maps, a Compare).
*Batch*: everything else (evaluations, cohorts, the demo import, re-encodings). Each job kind declares its lane
when it registers (:func:`app.jobs.registry.handler`); the job row records it, so every runner and page agrees.

Within a lane the order is **fair**, not first-come: round robin over the owners with queued jobs, the one
served least recently first (:func:`fair_order`). One user's twenty queued panels therefore do not hold back
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
import heapq
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

INTERACTIVE, BATCH = "interactive", "batch"
LANES = (INTERACTIVE, BATCH)
#: The longest a batch job waits at one progress report for interactive work to finish.
YIELD_MAX_S = 15.0
#: How often a batch job in a Celery worker looks whether interactive work runs on its host.
HOST_CHECK_S = 0.5


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
    """What the fair order needs of a job: its id, owner, age, and when it started if it is running."""

    id: str
    owner_id: int | None
    created_at: datetime
    started_at: datetime | None = None  # set for a running job: its owner was served then

    @property
    def running(self) -> bool:
        return self.started_at is not None


def fair_order(jobs: Iterable[Waiting], served: Mapping[int | None, datetime] | None = None) -> list[str]:
    """The ids of the *queued* jobs among ``jobs`` in the order a lane serves them: round robin over owners.

    The next job goes to the owner served least recently (never before first; among those, the one whose
    oldest queued job is oldest), and each owner's own jobs go first come, first served. ``served``: when each
    owner last had a job of this lane start (recently finished jobs); running jobs count too. Unlike a count of
    jobs ahead, this remembers whom the lane just served, so an owner with many jobs alternates with the others
    instead of getting a second turn as soon as the first job ends; and nobody starves: an owner with queued work
    is served within one round of the owners waiting.
    """
    last: dict[int | None, datetime] = dict(served or {})
    queues: dict[int | None, list[Waiting]] = {}
    for job in sorted(jobs, key=lambda j: (j.created_at, j.id)):
        if job.started_at is not None:
            if job.owner_id not in last or last[job.owner_id] < job.started_at:
                last[job.owner_id] = job.started_at
        else:
            queues.setdefault(job.owner_id, []).append(job)
    # Keys: (0, last served or never, oldest queued) for owners as the lane left them; (1, step) once the
    # simulation below has served them, so they go to the back of the round.
    heap = [((0, last.get(owner, datetime.min.replace(tzinfo=waiting[0].created_at.tzinfo)),
              waiting[0].created_at, str(owner)), owner) for owner, waiting in queues.items()]
    heapq.heapify(heap)
    order: list[str] = []
    step = 0
    while heap:
        _, owner = heapq.heappop(heap)
        waiting = queues[owner]
        order.append(waiting.pop(0).id)
        step += 1
        if waiting:
            heapq.heappush(heap, ((1, step), owner))
    return order


# --- handing the turn over within a lane ---------------------------------------------------------------------

class YieldTurn(Exception):
    """Raised by a handler at a safe point (a map stored) when :func:`turn_over` says others wait for their first
    result: the job goes back in its lane's queue with its remaining work (app.jobs.service.requeue)."""


_turn: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("lane_turn", default=None)


def turn_over() -> bool:
    """True once, when the running job should hand its turn over: it has delivered its first result and another
    job of its lane waits that has not delivered any. Why: on one interactive worker five panels asked at once
    were served whole, one after another, so the fifth clinician waited four panels for a first map; handing over
    after the first map gives everyone a first map within a few maps' time, and costs a panel's total nothing but
    one re-claim. Outside a job (or for a job that already handed over once) it is False."""
    check = _turn.get()
    return bool(check is not None and check())


def set_turn_check(check: Callable[[], bool] | None) -> contextvars.Token:
    return _turn.set(check)


def reset_turn_check(token: contextvars.Token) -> None:
    _turn.reset(token)


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


def has_checkpoint() -> bool:
    return _checkpoint.get() is not None


def push_checkpoint(wait: Callable[[], None]) -> contextvars.Token:
    return _checkpoint.set(wait)


def pop_checkpoint(token: contextvars.Token) -> None:
    _checkpoint.reset(token)


class HostYield:
    """The checkpoint of a batch job in a Celery worker: wait while an interactive job runs on this host.

    Why by host: two worker processes on one machine share its cores, and torch's threads in both slow each other
    by more than their share (measured: a clinician's panel 5× slower beside an evaluation); on another machine an
    interactive job takes nothing from this one. ``busy`` asks the database (the jobs table records each running
    job's ``host:pid``); it is asked at most every :data:`HOST_CHECK_S` while nothing runs, and every 0.1 s while
    waiting, for at most :data:`YIELD_MAX_S` per progress report, so batch work slows but never stops."""

    def __init__(self, busy: Callable[[], bool]) -> None:
        self.busy = busy
        self._next = 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        deadline = now + YIELD_MAX_S
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._next = time.monotonic() + HOST_CHECK_S


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

    def wait_idle(self, limit_s: float | None = None) -> float:
        """Block while interactive work is in hand, at most ``limit_s`` (default :data:`YIELD_MAX_S`); returns
        the seconds waited."""
        started = time.monotonic()
        with self._changed:
            self._changed.wait_for(lambda: not self.busy, timeout=YIELD_MAX_S if limit_s is None else limit_s)
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
