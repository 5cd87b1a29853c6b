"""The jobs table's state machine: one claim per job, a live heartbeat holds it, a dead one is taken over."""

from __future__ import annotations

from datetime import timedelta

import pytest

from app.db import utcnow
from app.jobs import service
from app.jobs.models import Job


def _job(app, **values) -> str:
    with app.state.sessions() as session:
        job = Job(kind="explain", payload={"explanation_ids": []}, **values)
        session.add(job)
        session.commit()
        return job.id


def test_a_queued_job_is_claimed_once(app) -> None:
    job_id = _job(app)
    first = service.claim(app.state.sessions, job_id)
    assert first is not None and first.state == "running" and first.attempts == 1 and first.worker
    with pytest.raises(service.JobBusy):  # a second copy while the first one's heartbeat is fresh
        service.claim(app.state.sessions, job_id)


def test_a_running_job_with_a_dead_heartbeat_is_taken_over(app) -> None:
    job_id = _job(app, state="running", attempts=1, updated_at=utcnow() - service.lease() - timedelta(seconds=5))
    taken = service.claim(app.state.sessions, job_id)
    assert taken is not None and taken.attempts == 2


def test_progress_is_a_heartbeat_and_finished_jobs_are_not_claimed(app) -> None:
    job_id = _job(app, state="running", attempts=1, updated_at=utcnow() - service.lease() - timedelta(seconds=5))
    service.progress_writer(app.state.sessions, job_id)(0.5)
    with pytest.raises(service.JobBusy):
        service.claim(app.state.sessions, job_id)
    service.finish(app.state.sessions, job_id)
    assert service.claim(app.state.sessions, job_id) is None
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.progress) == ("done", 1.0)


def test_a_job_interrupted_too_often_fails_instead_of_running_again(app) -> None:
    job_id = _job(app, state="running", attempts=service.MAX_ATTEMPTS,
                  updated_at=utcnow() - service.lease() - timedelta(seconds=5))
    assert service.claim(app.state.sessions, job_id) is None
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
        assert job.state == "failed" and "gave up" in job.error


def test_start_up_recovery_requeues_silent_jobs_and_leaves_live_ones_to_the_lease(app) -> None:
    silent = _job(app, state="running", attempts=1, updated_at=utcnow() - service.lease() - timedelta(seconds=5))
    live = _job(app, state="running", attempts=1, updated_at=utcnow())
    waiting = _job(app)
    with app.state.sessions() as session:
        queued, held = service.recover_interrupted(session)
        assert queued == [silent, waiting] or set(queued) == {silent, waiting}
        assert held == [live]
        assert session.get(Job, live).state == "running"


def test_a_worker_that_lost_its_lease_cannot_finish_the_job(app) -> None:
    job_id = _job(app, state="running", attempts=1, updated_at=utcnow() - service.lease() - timedelta(seconds=5),
                  worker="old-host:1")
    taken = service.claim(app.state.sessions, job_id)
    service.finish(app.state.sessions, job_id, error="the old worker crashed late", worker="old-host:1")
    service.progress_writer(app.state.sessions, job_id, "old-host:1")(0.9)
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
        assert (job.state, job.progress, job.error) == ("running", 0.0, None)
    service.finish(app.state.sessions, job_id, worker=taken.worker)
    with app.state.sessions() as session:
        assert session.get(Job, job_id).state == "done"


def test_a_long_queue_that_moves_is_not_lost_but_a_stalled_one_is(app) -> None:
    old = utcnow() - service.STALE_AFTER - timedelta(minutes=1)
    waiting = _job(app, created_at=old, updated_at=old)
    with app.state.sessions() as session:
        assert service.is_lost(session, session.get(Job, waiting))  # nothing has moved for the whole time
    _job(app, state="running", attempts=1, started_at=utcnow(), updated_at=utcnow())  # the queue moves
    with app.state.sessions() as session:
        assert not service.is_lost(session, session.get(Job, waiting))
        stalled = _job(app, state="running", attempts=1, started_at=old, updated_at=old)
        assert service.is_lost(session, session.get(Job, stalled))
