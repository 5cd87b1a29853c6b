"""`gestaltlens worker` starts a real Celery worker on the Redis broker: it answers a ping and completes a job."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from app.jobs.celery_app import make_celery
from app.jobs.models import Job
from app.settings import Settings
from app.synth.generate import generate_one
from app.web.factory import create_app
from tests.conftest import make_account, upload

REDIS_URL = os.environ.get("GESTALTLENS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _stop(process: subprocess.Popen) -> None:
    """A worker asked to stop gets 20 s to finish its task and leave; then it is killed."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def test_worker_command_connects_to_the_broker(tmp_path: Path) -> None:
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()  # a missing Redis fails loudly here
    env = {**os.environ, "GESTALTLENS_BROKER_URL": REDIS_URL, "GESTALTLENS_DATA_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1", "--loglevel", "WARNING"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        celery = make_celery(Settings(broker_url=REDIS_URL, data_dir=tmp_path))
        replies: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while not replies and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read() if process.stdout else "worker exited"
            replies = celery.control.ping(timeout=1.0) or []
        assert replies, "the worker never answered a ping"
        assert all(next(iter(r.values())) == {"ok": "pong"} for r in replies)
    finally:
        _stop(process)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_celery_worker_completes_an_explanation_job(migrated_url: str, tmp_path: Path) -> None:
    """The scale-out path end to end: the web app publishes, a real `gestaltlens worker` process on Redis
    claims the job from PostgreSQL, computes the maps and writes progress, files and state back."""
    redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    queue = f"test-{uuid.uuid4().hex[:10]}"  # this test's own queue: other runs on the same Redis stay apart
    settings = Settings(data_dir=tmp_path / "data", database_url=migrated_url, job_runner="celery",
                        broker_url=REDIS_URL, job_queue=queue, secret_key="test-secret-key-that-is-long-enough")
    env = {**os.environ, "GESTALTLENS_BROKER_URL": REDIS_URL, "GESTALTLENS_JOB_QUEUE": queue,
           "GESTALTLENS_DATABASE_URL": migrated_url, "GESTALTLENS_DATA_DIR": str(settings.data_dir),
           "GESTALTLENS_SECRET_KEY": settings.secret_key or ""}
    app = create_app(settings)
    account = make_account(app, "alice", "clinician")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1", "--loglevel", "WARNING"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        with TestClient(app) as client:
            face = generate_one(seed=31, class_id="syn_c", index=0, severity=1.0).jpeg
            case = upload(client, account, face).json()
            body = client.post(f"/api/v1/cases/{case['id']}/explanations",
                               json={"methods": ["saliency", "integrated_gradients", "gradcam"]},
                               headers=account.headers).json()
            deadline = time.monotonic() + 120
            job: dict = {}
            while time.monotonic() < deadline:
                assert process.poll() is None, process.stdout.read() if process.stdout else "worker exited"
                job = client.get(f"/api/v1/jobs/{body['job_id']}", headers=account.headers).json()
                if job["state"] in ("done", "failed"):
                    break
                time.sleep(0.2)
            assert job.get("state") == "done", job
            listed = client.get(f"/api/v1/cases/{case['id']}/explanations", headers=account.headers).json()
            assert {e["status"] for e in listed} == {"done"}
            raw = client.get(listed[0]["urls"]["npy"], headers=account.headers)
            assert np.load(io.BytesIO(raw.content)).shape == (112, 112)
        with app.state.sessions() as session:
            stored = session.get(Job, body["job_id"])
            assert stored.worker and stored.attempts == 1 and stored.started_at and stored.finished_at
    finally:
        _stop(process)
        app.state.engine.dispose()
