"""Liveness and readiness probes (no auth) and the OpenAPI schema (authenticated, like every other route).

``/healthz`` says only that this process answers (an orchestrator restarts it otherwise); ``/readyz`` says
whether it can do its work, checking the database and, with the Celery runner, the broker, so an outage
is visible to operators and load balancers instead of hiding behind a 200.
"""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.web.deps import CurrentUser
from app.web.errors import is_disk_full

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


PROBE_TIMEOUT_S = 2.0


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure to run SELECT 1 means "not ready"; the reason is the operator's log
        return False


def _storage_status(request: Request) -> str:
    """"ok", or "full": less free space under the data directory than ``min_free_mb``, or a small file cannot
    be written there (the free-space figure alone misses quotas and root-reserved blocks)."""
    settings = request.app.state.settings
    folder = Path(settings.data_dir)
    try:
        if shutil.disk_usage(folder).free < settings.min_free_mb * 2**20:
            return "full"
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
        return "ok"
    except OSError as exc:
        return "full" if is_disk_full(exc) else "unavailable"


def _broker_status(request: Request) -> str:
    settings = request.app.state.settings
    if settings.job_runner != "celery":
        return "not_used"
    try:
        client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=PROBE_TIMEOUT_S,
                                      socket_timeout=PROBE_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
        return "ok"
    except Exception:  # unreachable, refused, timed out: not ready
        return "unavailable"


@router.get("/readyz", summary="Readiness: database and broker reachable")
async def readyz(request: Request) -> JSONResponse:
    database = "ok" if await run_in_threadpool(_database_ok, request) else "unavailable"
    broker = await run_in_threadpool(_broker_status, request)
    storage = await run_in_threadpool(_storage_status, request)
    ready = database == "ok" and broker in ("ok", "not_used") and storage == "ok"
    # The model's state is reported, not required: intake works without it, and requests that need it wait for
    # the load in progress or answer 503 model_unavailable with the reason.
    body = {"status": "ok" if ready else "unavailable", "database": database, "broker": broker, "storage": storage,
            "model": request.app.state.models.state()}
    if storage == "full":
        body.update(detail="The data directory's storage is full: uploads and maps cannot be saved.",
                    code="storage_full")
    elif not ready:
        body.update(detail="A service this app needs is unavailable.",
                    code="database_unavailable" if database != "ok" else
                    "queue_unavailable" if broker not in ("ok", "not_used") else "storage_unavailable")
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/api/v1/openapi.json", summary="The OpenAPI schema of this API")
def openapi_schema(request: Request, user: CurrentUser) -> dict[str, Any]:
    return request.app.openapi()
