"""Liveness probe (no auth, by contract) and the OpenAPI schema (authenticated, like every other route)."""

from typing import Any

from fastapi import APIRouter, Request

from app.web.deps import CurrentUser

router = APIRouter(tags=["meta"])


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/api/v1/openapi.json", summary="The OpenAPI schema of this API")
def openapi_schema(request: Request, user: CurrentUser) -> dict[str, Any]:
    return request.app.openapi()
