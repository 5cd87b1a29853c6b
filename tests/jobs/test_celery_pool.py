"""A stopped Celery runner must not break the next one in the same process.

kombu keeps one broker connection pool per broker address for the whole process; the runner's stop closed that
shared pool, and the next app on the same address (a test's second app, a web app re-created in one process)
failed with "Acquire on closed pool" (seen in CI: a fault test's ping of its worker).
"""

from __future__ import annotations

import os
from pathlib import Path

from app.jobs.runners import CeleryRunner
from app.settings import Settings

REDIS_URL = os.environ.get("GESTALTLENS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _runner(tmp_path: Path) -> CeleryRunner:
    return CeleryRunner(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite",
                                 job_runner="celery", broker_url=REDIS_URL, secret_key="x" * 40,
                                 job_queue="pool-test"))


def _connect(runner: CeleryRunner) -> None:
    with runner.celery.pool.acquire(block=True, timeout=5) as connection:
        connection.ensure_connection(max_retries=1)


def test_a_stopped_runner_leaves_the_next_app_a_working_broker_pool(tmp_path: Path) -> None:
    first = _runner(tmp_path)
    _connect(first)
    first.stop()
    second = _runner(tmp_path)
    assert second.celery.pool is not first.celery.pool
    _connect(second)  # raised RuntimeError("Acquire on closed pool") before the fix
    second.stop()
