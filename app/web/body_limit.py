"""Request body cap, enforced while the body is read (not only from Content-Length).

Starlette ships a body-limit middleware, but it answers in plain text; the HTTP contract promises
``{"detail", "code": "too_large"}`` for every error, so this small middleware keeps the same streaming
check and answers in the contract's shape. The exception is an ``HTTPException`` so FastAPI re-raises it
from body parsing instead of turning it into a generic 400.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(status_code=413, detail="The request body is larger than this server accepts.")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    def _refusal(self, max_bytes: int) -> JSONResponse:
        limit_mb = max_bytes / (1024 * 1024)
        return JSONResponse(
            {"detail": f"The request is larger than the {limit_mb:.0f} MB this server accepts.", "code": "too_large"},
            status_code=413,
            headers={"Connection": "close"},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.overrides.get(scope["path"], self.max_bytes)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            await self._refusal(max_bytes)(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refusal(max_bytes)(scope, receive, send)
