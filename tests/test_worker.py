"""`gestaltlens worker` starts a real Celery worker on the Redis broker and answers a ping."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from app.jobs.celery_app import make_celery
from app.settings import Settings

REDIS_URL = os.environ.get("GESTALTLENS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def test_worker_command_connects_to_the_broker(tmp_path: Path) -> None:
    import redis

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
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
