"""Liveness and readiness probes (no auth) and the OpenAPI schema (authenticated, like every other route).

``/healthz`` says only that this process answers (an orchestrator restarts it otherwise); ``/readyz`` says
whether it can do its work, checking the database and, with the Celery runner, the broker, so an outage
is visible to operators and load balancers instead of hiding behind a 200.
"""

from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.web.deps import CurrentUser

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
    ready = database == "ok" and broker in ("ok", "not_used")
    body = {"status": "ok" if ready else "unavailable", "database": database, "broker": broker}
    if not ready:
        body.update(detail="A service this app needs is unavailable.",
                    code="database_unavailable" if database != "ok" else "queue_unavailable")
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/api/v1/openapi.json", summary="The OpenAPI schema of this API")
def openapi_schema(request: Request, user: CurrentUser) -> dict[str, Any]:
    return request.app.openapi()
