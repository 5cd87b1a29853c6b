"""Job lanes (issue 21): interactive work overtakes queued batch work, batch work still finishes while interactive
work keeps arriving, two users are served in fair order, each queued job knows its place and estimate — on the
inline runner (SQLite and PostgreSQL) and on real Celery workers on Redis, one per lane, where a killed worker's
job is recovered in its own lane."""

from __future__ import annotations

import os
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.auth.models import User
from app.jobs import lanes
from app.jobs import service as job_service
from app.jobs.celery_app import make_celery
from app.jobs.lanes import BATCH, INTERACTIVE, Waiting, fair_order
from app.jobs.models import Job
from app.settings import PROJECT_ROOT, Settings
from app.web.factory import create_app
from tests.conftest import SHORT_LEASE_S, make_account
from tests.fault_support import kill9, stop, wait_until
from tests.jobs.lane_kinds import BATCH_KIND, INTERACTIVE_KIND

REDIS_URL = os.environ.get("GESTALTLENS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SECRET = "test-secret-key-that-is-long-enough"


def _at(second: int) -> datetime:
    return datetime(2026, 1, 1, 12, 0, second)


def test_fair_order_serves_each_users_first_job_before_anyones_second() -> None:
    jobs = [Waiting("a1", 1, _at(1)), Waiting("a2", 1, _at(2)), Waiting("a3", 1, _at(3)), Waiting("b1", 2, _at(4)),
            Waiting("c1", None, _at(5)), Waiting("b2", 2, _at(6))]
    assert fair_order(jobs) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    # A job already running counts as one of its owner's turns.
    assert fair_order([Waiting("a0", 1, _at(0), started_at=_at(7)), *jobs[:4]]) == ["b1", "a1", "a2", "a3"]
    # Whom the lane served last goes to the back: alice's job just ended, so bob's first comes before her next.
    assert fair_order(jobs[1:4], served={1: _at(7)}) == ["b1", "a2", "a3"]
    assert fair_order(jobs[1:4], served={1: _at(7), 2: _at(8)}) == ["a2", "b1", "a3"]
    # One job per user: first come, first served.
    assert fair_order([Waiting("x", 3, _at(9)), Waiting("y", 4, _at(8))]) == ["y", "x"]


def test_lane_names_and_queues() -> None:
    assert lanes.parse_lanes(" interactive , batch,interactive") == (INTERACTIVE, BATCH)
    assert lanes.queue_name("gl", BATCH) == "gl.batch"
    with pytest.raises(ValueError, match="unknown lane"):
        lanes.parse_lanes("interactive,urgent")
    from app.jobs.registry import lane_of

    assert lane_of("explain") == INTERACTIVE and lane_of("evaluate") == BATCH and lane_of("cohort") == BATCH


def _user(app, username: str) -> User:
    with app.state.sessions() as session:
        return session.scalars(select(User).where(User.username == username)).one()


def _queue(app, kind: str, owner: User | None, *, seconds: float, estimated_s: float | None = None,
           hold: Path | None = None, submit: bool = True, turn_at: int | None = None) -> str:
    with app.state.sessions() as session:
        job = job_service.create_job(session, kind=kind, owner=owner, estimated_s=estimated_s,
                                     payload={"seconds": seconds, **({"hold": str(hold)} if hold else {}),
                                              **({"turn_at": turn_at} if turn_at is not None else {})})
        session.commit()
        job_id, lane = job.id, job.lane
    if submit:
        app.state.jobs.submit(job_id, lane)
    return job_id


def _job(app, job_id: str) -> Job:
    with app.state.sessions() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def _finished(app, *ids: str) -> bool:
    return all(_job(app, i).state in ("done", "failed") for i in ids)


def test_interactive_work_overtakes_queued_batch_work_inline(client: TestClient, app, alice, tmp_path: Path) -> None:
    owner = _user(app, "alice")
    hold = tmp_path / "release"
    first = _queue(app, BATCH_KIND, owner, seconds=0.2, hold=hold, estimated_s=2.0)
    wait_until(lambda: _job(app, first).state == "running", 30, "the first batch job to start")
    behind = [_queue(app, BATCH_KIND, owner, seconds=0.2, estimated_s=2.0) for _ in range(2)]
    # Each queued job knows its place in its lane and when it should start and end.
    shown = [client.get(f"/api/v1/jobs/{i}", headers=alice.headers).json() for i in behind]
    assert [s["lane"] for s in shown] == [BATCH, BATCH] and [s["position"] for s in shown] == [0, 1]
    assert [s["ahead"] for s in shown] == [1, 2]
    assert shown[0]["estimated_start_at"] and shown[0]["estimated_end_at"] and shown[1]["estimated_start_at"]
    assert shown[1]["estimated_start_at"] >= shown[0]["estimated_end_at"][:19]
    assert shown[0]["estimated_s"] == 2.0 and shown[0]["duration_s"] is None

    urgent = _queue(app, INTERACTIVE_KIND, owner, seconds=0.2, estimated_s=0.2)
    wait_until(lambda: _finished(app, urgent), 30, "the interactive job to finish")
    assert _job(app, urgent).state == "done"
    assert [_job(app, i).state for i in behind] == ["queued", "queued"]  # it overtook them
    assert _job(app, first).state == "running"

    hold.touch()
    wait_until(lambda: _finished(app, first, *behind), 60, "the batch jobs to finish")
    done = client.get(f"/api/v1/jobs/{behind[1]}", headers=alice.headers).json()
    assert done["state"] == "done" and done["position"] is None and done["estimated_start_at"] is None
    assert done["duration_s"] is not None and done["duration_s"] > 0 and done["estimated_s"] == 2.0


def test_batch_work_finishes_while_interactive_work_keeps_arriving(client: TestClient, app, alice,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lanes, "YIELD_MAX_S", 0.2)
    owner = _user(app, "alice")
    batch = _queue(app, BATCH_KIND, owner, seconds=0.5)
    interactive: list[str] = []
    deadline = time.monotonic() + 120
    while not _finished(app, batch) and time.monotonic() < deadline and len(interactive) < 400:
        interactive.append(_queue(app, INTERACTIVE_KIND, owner, seconds=0.3))
        time.sleep(0.1)
    assert _job(app, batch).state == "done", "batch work starved while interactive work kept arriving"
    # Interactive work really kept arriving faster than it was done for as long as the batch job ran.
    assert len(interactive) >= 3
    wait_until(lambda: _finished(app, *interactive), 240, "the interactive jobs to finish", interval=0.5)


def test_two_users_are_served_in_fair_order_inline(client: TestClient, app, alice, bob, admin,
                                                   tmp_path: Path) -> None:
    hold = tmp_path / "release"
    blocker = _queue(app, BATCH_KIND, _user(app, "ada"), seconds=0.1, hold=hold)
    wait_until(lambda: _job(app, blocker).state == "running", 30, "the blocking job to start")
    a, b = _user(app, "alice"), _user(app, "bob")
    alices = [_queue(app, BATCH_KIND, a, seconds=0.1) for _ in range(3)]
    time.sleep(0.01)
    bobs = [_queue(app, BATCH_KIND, b, seconds=0.1)]
    positions = {i: client.get(f"/api/v1/jobs/{i}", headers=admin.headers).json()["position"]
                 for i in (*alices, *bobs)}
    assert [positions[i] for i in (alices[0], bobs[0], alices[1], alices[2])] == [0, 1, 2, 3]
    hold.touch()
    wait_until(lambda: _finished(app, *alices, *bobs), 60, "every job to finish")
    started = sorted((*alices, *bobs), key=lambda i: _job(app, i).started_at)
    assert started == [alices[0], bobs[0], alices[1], alices[2]]


def test_a_panel_hands_its_turn_over_after_its_first_map_inline(client: TestClient, app, alice, bob,
                                                               tmp_path: Path) -> None:
    """Two clinicians ask for panels at once: the second gets its first map before the first panel is whole."""
    from app.explanations.models import Explanation
    from app.synth.generate import generate_one
    from tests.conftest import upload

    cases = {who: upload(client, account, generate_one(seed=41 + i, class_id="syn_d", index=i, severity=1.0).jpeg
                         ).json()["id"] for i, (who, account) in enumerate((("alice", alice), ("bob", bob)))}
    hold = tmp_path / "release"
    blocker = _queue(app, INTERACTIVE_KIND, None, seconds=0.1, hold=hold)
    wait_until(lambda: _job(app, blocker).state == "running", 30, "the blocking job to start")
    methods = {"methods": ["saliency", "gradcam", "integrated_gradients", "input_x_gradient"]}
    jobs = {who: client.post(f"/api/v1/cases/{cases[who]}/explanations", json=methods,
                             headers=account.headers).json()["job_id"] for who, account in (("alice", alice),
                                                                                             ("bob", bob))}
    hold.touch()
    wait_until(lambda: _finished(app, *jobs.values()), 240, "both panels to finish", interval=0.25)
    first, second = _job(app, jobs["alice"]), _job(app, jobs["bob"])
    assert first.state == second.state == "done" and first.payload.get("_handed_over") is True
    with app.state.sessions() as session:
        done = {who: sorted(session.scalars(select(Explanation.finished_at).where(Explanation.job_id == job)))
                for who, job in jobs.items()}
    assert len(done["alice"]) == len(done["bob"]) == 4
    assert done["bob"][0] < done["alice"][-1]  # bob's first map came before alice's panel was whole
    assert done["alice"][0] < done["bob"][0]  # and alice's first map before bob's: she asked first
    listed = client.get(f"/api/v1/cases/{cases['alice']}/explanations", headers=alice.headers).json()
    assert sorted(e["status"] for e in listed) == ["done"] * 4


# --- Celery: one worker per lane on the real broker ---------------------------------------------------------

LEASE_S, VISIBILITY_S = SHORT_LEASE_S, 6.0


def _spawn_worker(lane_list: str, env: dict[str, str], log: Path):
    import subprocess

    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "tests.jobs.lane_worker", "worker", "--lanes", lane_list,
                             "--concurrency", "1", "--loglevel", "WARNING"], env=env, stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT)


def _answering(celery, prefix: str, process, log: Path) -> None:
    def answers() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        replies = celery.control.ping(timeout=0.5) or []
        return any(next(iter(r)).startswith(prefix) for r in replies)

    wait_until(answers, 90, f"the {prefix} worker to answer a ping", interval=0.2)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_celery_workers_per_lane_overtake_and_recover_in_their_lane(migrated_url: str, tmp_path: Path,
                                                                     short_lease: None) -> None:
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()  # a missing Redis fails loudly here
    queue = f"lanes-{uuid.uuid4().hex[:10]}"
    settings = Settings(data_dir=tmp_path / "data", database_url=migrated_url, job_runner="celery",
                        broker_url=REDIS_URL, job_queue=queue, secret_key=SECRET, job_visibility_timeout_s=VISIBILITY_S)
    env = {**os.environ, "GESTALTLENS_DATABASE_URL": migrated_url, "GESTALTLENS_DATA_DIR": str(settings.data_dir),
           "GESTALTLENS_SECRET_KEY": SECRET, "GESTALTLENS_BROKER_URL": REDIS_URL, "GESTALTLENS_JOB_QUEUE": queue,
           "GESTALTLENS_JOB_LEASE_S": str(LEASE_S), "GESTALTLENS_JOB_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
           "GESTALTLENS_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    app = create_app(settings)
    make_account(app, "alice", "clinician")
    make_account(app, "bob", "clinician")
    celery = make_celery(settings)
    log = tmp_path / "workers.log"
    batch_worker = _spawn_worker("batch", env, log)
    interactive_worker = _spawn_worker("interactive", env, log)
    replacement = None
    try:
        with TestClient(app):
            _answering(celery, "batch@", batch_worker, log)
            _answering(celery, "interactive@", interactive_worker, log)
            owner = _user(app, "alice")
            hold = tmp_path / "release"
            first = _queue(app, BATCH_KIND, owner, seconds=0.3, hold=hold)
            wait_until(lambda: _job(app, first).state == "running", 60, "the first batch job to start")
            behind = [_queue(app, BATCH_KIND, owner, seconds=0.3) for _ in range(2)]
            urgent = _queue(app, INTERACTIVE_KIND, owner, seconds=0.2)
            wait_until(lambda: _finished(app, urgent), 60, "the interactive job to finish")
            assert _job(app, urgent).state == "done"
            assert [_job(app, i).state for i in behind] == ["queued", "queued"]  # it overtook them

            # A long interactive job hands its turn over to a newer one that has shown nothing yet, and its own
            # message is published again, so it still ends.
            long = _queue(app, INTERACTIVE_KIND, owner, seconds=2.0, turn_at=20)
            wait_until(lambda: _job(app, long).state == "running", 60, "the long interactive job to start")
            bobs = _queue(app, INTERACTIVE_KIND, _user(app, "bob"), seconds=0.2)
            wait_until(lambda: _finished(app, long, bobs), 120, "both interactive jobs to finish")
            handed, quick = _job(app, long), _job(app, bobs)
            assert handed.state == quick.state == "done" and handed.payload.get("_handed_over") is True
            assert quick.finished_at < handed.finished_at and handed.attempts == 1

            # The batch worker dies holding its job: the interactive worker never takes batch work ...
            kill9(batch_worker)
            time.sleep(VISIBILITY_S + LEASE_S + 2)
            assert _job(app, first).state == "running" and [_job(app, i).state for i in behind] == ["queued"] * 2
            # ... and a new batch worker recovers it in its lane (re-delivered after the visibility timeout).
            hold.touch()
            replacement = _spawn_worker("batch", env, log)
            wait_until(lambda: _finished(app, first, *behind), 120, "the batch lane to recover", interval=0.5)
            recovered = _job(app, first)
            assert recovered.state == "done" and recovered.attempts == 2, (recovered.state, recovered.error)
            assert all(_job(app, i).state == "done" for i in behind)
    finally:
        for process in (batch_worker, interactive_worker, replacement):
            if process is not None:
                stop(process)
        app.state.engine.dispose()


def test_the_wait_phrase_says_place_and_estimate() -> None:
    from datetime import timedelta

    from app.jobs.outlook import Outlook, wait_phrase

    now = _at(0)
    queued = Outlook(INTERACTIVE, 1, 2, 30.0, now + timedelta(seconds=40), now + timedelta(seconds=70))
    assert wait_phrase(queued, now) == ("2nd in the interactive line (1 job running) · starts in about 40 s · "
                                        "done in about 2 min")
    unknown = Outlook(BATCH, 0, 1, None, None, None)
    assert wait_phrase(unknown, now).startswith("next in the batch line (1 job running) · no estimate yet")
    running = Outlook(BATCH, None, 0, 600.0, now, now + timedelta(seconds=3 * 3600 + 61))
    assert wait_phrase(running, now) == "about 3 h 02 min left"


def test_the_explanation_page_shows_the_place_in_the_line(client: TestClient, app, alice, tmp_path: Path) -> None:
    from app.synth.generate import generate_one
    from tests.conftest import login, upload

    case = upload(client, alice, generate_one(seed=35, class_id="syn_b", index=0, severity=1.0).jpeg).json()
    hold = tmp_path / "release"
    blocker = _queue(app, INTERACTIVE_KIND, _user(app, "alice"), seconds=0.1, hold=hold, estimated_s=5.0)
    try:
        wait_until(lambda: _job(app, blocker).state == "running", 30, "the blocking job to start")
        asked = client.post(f"/api/v1/cases/{case['id']}/explanations", json={"methods": ["saliency"]},
                            headers=alice.headers).json()
        shown = client.get(f"/api/v1/jobs/{asked['job_id']}", headers=alice.headers).json()
        assert shown["lane"] == INTERACTIVE and shown["position"] == 0 and shown["estimated_s"] > 0
        login(client, alice)
        fragment = client.get(f"/jobs/{asked['job_id']}/progress").text
        assert "Queued — next in the interactive line (1 job running) · starts in about" in fragment
        assert "waiting for a worker" not in fragment
    finally:
        hold.touch()
    wait_until(lambda: _finished(app, blocker, asked["job_id"]), 60, "both jobs to finish")


def test_host_yield_waits_while_interactive_work_runs_and_no_longer_than_its_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([True, True, False])
    waiting = lanes.HostYield(lambda: next(answers))
    started = time.monotonic()
    waiting()  # busy, busy, free: about two polls of 0.1 s
    assert 0.15 <= time.monotonic() - started < 5
    waiting()  # asked again within HOST_CHECK_S: no database question, no wait
    monkeypatch.setattr(lanes, "YIELD_MAX_S", 0.3)
    always = lanes.HostYield(lambda: True)
    started = time.monotonic()
    always()
    assert 0.3 <= time.monotonic() - started < 5  # batch work slows, never stops
