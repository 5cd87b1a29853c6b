"""Honest waiting: each queued job's position in its lane and when it should start and end.

The picture of a lane is simulated from what the database knows, so any web process answers for any runner:

* every running job of the lane ends after its *remaining* time: from its own measured rate once it has made
  progress (elapsed × (1 − p) / p, the throughput actually achieved on this machine under its present load),
  else from its expected duration less the time it has run;
* the lane serves its queued jobs in the fair order (:func:`app.jobs.lanes.fair_order`) on as many slots as
  it has jobs running (at least one): each next job starts when the earliest slot frees;
* a job's expected duration is the estimate its domain queued it with (a cost model fitted by the benches:
  network passes × seconds per pass), corrected by how the recent jobs of its kind compared with their own
  estimates (their real seconds over their estimated seconds, summed over the last :data:`CALIBRATION_JOBS`);
  a kind without a cost model uses the median real duration of its recent jobs.

A finished job keeps its estimate beside its real duration (``estimated_s``, ``duration_s``), so the estimates
can be checked (the bench reports their error).
"""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs.lanes import Waiting, fair_order
from app.jobs.models import DONE, QUEUED, RUNNING, Job

#: How many recent finished jobs of a kind calibrate its estimates.
CALIBRATION_JOBS = 20
#: A running job's own rate is trusted once it has made this much progress.
MIN_PROGRESS = 0.05
#: Calibration ratios are clamped to this range: one odd job must not make every estimate absurd.
RATIO_RANGE = (0.1, 20.0)


@dataclass(frozen=True)
class Outlook:
    """Where one job stands. Times are None when nothing is known to estimate them with."""

    lane: str
    position: int | None  # 0 = next to start; None once started
    ahead: int  # jobs that start before it (queued ahead of it) plus those running in its lane
    expected_s: float | None  # its whole expected duration
    starts_at: datetime | None
    ends_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {"lane": self.lane, "position": self.position, "ahead": self.ahead,
                "expected_s": None if self.expected_s is None else round(self.expected_s, 3),
                "estimated_start_at": self.starts_at.isoformat() if self.starts_at else None,
                "estimated_end_at": self.ends_at.isoformat() if self.ends_at else None}


def duration_s(job: Job) -> float | None:
    """The real duration of a finished job (its last attempt), the figure its estimate is checked against."""
    if job.started_at is None or job.finished_at is None:
        return None
    return max(0.0, (job.finished_at - job.started_at).total_seconds())


class Calibration:
    """Per kind: the real/estimated ratio and the median real duration of its recent done jobs."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._cache: dict[str, tuple[float, float | None]] = {}

    def _of(self, kind: str) -> tuple[float, float | None]:
        if kind not in self._cache:
            recent = list(self.session.execute(
                select(Job.started_at, Job.finished_at, Job.estimated_s)
                .where(Job.kind == kind, Job.state == DONE, Job.started_at.is_not(None),
                       Job.finished_at.is_not(None))
                .order_by(Job.finished_at.desc()).limit(CALIBRATION_JOBS)))
            durations = [(f - s).total_seconds() for s, f, _ in recent]
            # Real over estimated seconds summed over the recent jobs, not a median of per-job ratios: a tiny
            # job (one map, a fixed overhead of loading and storing) must not inflate every later estimate.
            paired = [(d, e) for d, (_, _, e) in zip(durations, recent, strict=True) if e and e > 0]
            ratio = sum(d for d, _ in paired) / sum(e for _, e in paired) if paired else 1.0
            ratio = min(RATIO_RANGE[1], max(RATIO_RANGE[0], ratio))
            self._cache[kind] = (ratio, statistics.median(durations) if durations else None)
        return self._cache[kind]

    def expected(self, job: Job) -> float | None:
        ratio, typical = self._of(job.kind)
        if job.estimated_s is not None and job.estimated_s > 0:
            return float(job.estimated_s) * ratio
        return typical


def remaining_s(job: Job, expected: float | None, now: datetime) -> float | None:
    """Seconds a running job still needs: its measured rate once it has progressed, else expected − elapsed."""
    if job.started_at is None:
        return expected
    elapsed = max(0.0, (now - job.started_at).total_seconds())
    progress = float(job.progress or 0.0)
    if progress >= MIN_PROGRESS:
        return elapsed * (1.0 - progress) / progress
    if expected is None:
        return None
    return max(expected - elapsed, 0.1 * expected)


#: How far back the lane remembers whom it served (for the round robin of app.jobs.lanes.fair_order).
SERVED_MEMORY = timedelta(hours=1)


def lane_order(session: Session, lane: str, jobs: list[Job] | None = None) -> list[str]:
    """The queued jobs of ``lane`` in the order it serves them (``jobs``: its queued and running jobs, if loaded)."""
    if jobs is None:
        jobs = list(session.scalars(select(Job).where(Job.lane == lane, Job.state.in_((QUEUED, RUNNING)))))
    served = dict(session.execute(
        select(Job.owner_id, func.max(Job.started_at))
        .where(Job.lane == lane, Job.started_at >= utcnow() - SERVED_MEMORY).group_by(Job.owner_id)).all())
    return fair_order((Waiting(j.id, j.owner_id, j.created_at, j.started_at if j.state == RUNNING else None)
                       for j in jobs), served)


def lane_outlook(session: Session, lane: str, now: datetime | None = None) -> dict[str, Outlook]:
    """Every queued and running job of ``lane`` → its outlook (one query for the lane)."""
    now = now or utcnow()
    jobs = list(session.scalars(select(Job).where(Job.lane == lane, Job.state.in_((QUEUED, RUNNING)))))
    calibration = Calibration(session)
    running = [j for j in jobs if j.state == RUNNING]
    by_id = {j.id: j for j in jobs}
    order = lane_order(session, lane, jobs)
    out: dict[str, Outlook] = {}
    slots: list[float | None] = []
    for job in running:
        expected = calibration.expected(job)
        left = remaining_s(job, expected, now)
        slots.append(left)
        out[job.id] = Outlook(lane, None, 0, expected, job.started_at,
                              None if left is None else now + timedelta(seconds=left))
    known = [s for s in slots if s is not None]
    # A running job whose end cannot be estimated is taken to end with the longest known one (or now), and
    # nothing behind it is given a time: an honest "unknown" rather than an invented figure.
    timed = len(known) == len(slots)
    free = [*known, *([max(known, default=0.0)] * (len(slots) - len(known)))] or [0.0]
    heapq.heapify(free)
    for position, job_id in enumerate(order):
        job = by_id[job_id]
        expected = calibration.expected(job)
        start = heapq.heappop(free)
        heapq.heappush(free, start + (expected or 0.0))
        starts_at = now + timedelta(seconds=start) if timed else None
        ends_at = starts_at + timedelta(seconds=expected) if starts_at is not None and expected is not None else None
        timed = timed and expected is not None
        out[job_id] = Outlook(lane, position, position + len(running), expected, starts_at, ends_at)
    return out


def outlook_for(session: Session, job: Job) -> Outlook | None:
    """The outlook of one job (None once it has finished)."""
    if job.state not in (QUEUED, RUNNING):
        return None
    return lane_outlook(session, job.lane).get(job.id)


def _span(seconds: float) -> str:
    """A duration as people read it on a page: "40 s", "3 min", "1 h 20 min" (rounded up, never "0 s")."""
    seconds = max(1.0, seconds)
    if seconds < 60:
        return f"{min(60, 5 * -(-int(seconds) // 5))} s"
    minutes = -(-int(seconds) // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def wait_phrase(outlook: Outlook | None, now: datetime | None = None) -> str:
    """What a page says about a job instead of a fixed phrase: its place in its lane and the estimate.

    Queued: "2nd in the batch line (1 job running) · starts in about 40 s · done in about 3 min". Running:
    "about 2 min left" (or "" when nothing is known). No estimate is invented: without one the page says so.
    """
    if outlook is None:
        return ""
    now = now or utcnow()
    if outlook.position is None:
        return f"about {_span((outlook.ends_at - now).total_seconds())} left" if outlook.ends_at else ""
    running = outlook.ahead - outlook.position
    place = "next" if outlook.position == 0 else _ordinal(outlook.position + 1)
    text = f"{place} in the {outlook.lane} line"
    if running:
        text += f" ({running} job{'s' if running != 1 else ''} running)"
    if outlook.starts_at is None:
        return text + " · no estimate yet (no finished job of this kind to go by)"
    start = (outlook.starts_at - now).total_seconds()
    text += " · starts in about " + _span(start) if start >= 1 else " · starts now"
    if outlook.ends_at is not None:
        text += f" · done in about {_span((outlook.ends_at - now).total_seconds())}"
    return text
