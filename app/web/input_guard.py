"""Refuse malformed requests before any route sees them: oversized headers, control characters in the URL.

Why here and not per route: a NUL byte in any query parameter reached PostgreSQL (which cannot store or
compare it) and became a 500 on a dozen routes, some of them anonymous; a 10 MB header was accepted.
Both are properties of the request, not of a route, so one check covers every route, present and future.
(``app.db`` refuses control characters in bound statement parameters as well, which covers form and JSON
bodies.)
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Total size of the request line's target and every header. Browsers send a few kilobytes; uvicorn itself
#: caps a single incomplete h11 event at 16 KiB but not httptools' headers.
MAX_HEADER_BYTES = 32 * 1024
#: C0 controls and DEL. Tab is allowed nowhere in a URL either.
_CONTROL = bytes(range(0x20)) + b"\x7f"


def _has_control(raw: bytes) -> bool:
    return any(byte in _CONTROL for byte in unquote_to_bytes(raw.replace(b"+", b" ")))


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp, max_header_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
        size += sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
        if size > self.max_header_bytes:
            await _refuse(431, "headers_too_large",
                          f"The request's headers exceed {self.max_header_bytes // 1024} KiB.")(scope, receive, send)
            return
        path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        if _has_control(path) or _has_control(scope.get("query_string", b"")):
            await _refuse(400, "invalid_request",
                          "Invalid request: the address contains NUL or control characters.")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _refuse(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers={"Cache-Control": "no-store"})
