"""One error shape for the whole API: ``{"detail": str, "code": str}`` plus optional extra fields.

Services raise :class:`app.errors.DomainError`; one handler here turns it (and Starlette's HTTP errors,
validation errors, an unavailable database) into that JSON contract, with ``Cache-Control: no-store``.
Browser pages get a readable HTML page instead, and unauthenticated page requests go to the login form.
"""

from __future__ import annotations

import errno
import logging
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import UnstorableText
from app.errors import DomainError, NotFound

__all__ = ["ApiError", "DomainError", "NotAuthenticated", "NotFound", "error_response", "install_error_handlers",
           "wants_json"]

log = logging.getLogger("gestaltlens.web")


class ApiError(DomainError):
    """A web-only refusal raised by routes (status first, as routes have always written it).

    Services raise :class:`DomainError` itself; this subclass only keeps the routes' argument order.
    """

    def __init__(self, status_code: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(code, detail, status_code, **extra)


class NotAuthenticated(ApiError):
    def __init__(self) -> None:
        super().__init__(401, "not_authenticated", "Log in or send 'Authorization: Bearer <token>'.")


_STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_type",
    429: "too_many_requests",
}

JSON_PREFIXES = ("/api/", "/predict", "/encode", "/crop", "/status", "/healthz")
GESTALTMATCHER_PATHS = frozenset({"/predict", "/encode", "/crop", "/status"})


def wants_json(request: Request) -> bool:
    path = request.url.path
    if path.startswith(JSON_PREFIXES):
        return True
    return "text/html" not in request.headers.get("accept", "") and "hx-request" not in request.headers


def _return_to(request: Request) -> str:
    """Where to land after logging in again: the *page* the person was on. An htmx request's own path is a
    fragment or an action (``POST /cases/…/explanations``), and a form's POST path answers 405 to the GET a
    login redirect makes, so those go back to the page that sent them (htmx's ``HX-Current-URL``, else the
    ``Referer``), and only when it is this site's own; a plain GET returns to itself."""
    if request.method == "GET" and "hx-request" not in request.headers:
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    for header in ("hx-current-url", "referer"):
        page = urlsplit(request.headers.get(header, ""))
        if page.path.startswith("/") and not page.path.startswith("//") and page.netloc in ("", request.url.netloc):
            return page.path + (f"?{page.query}" if page.query else "")
    return "/cases"


def error_response(request: Request, status_code: int, code: str, detail: str, **extra: Any) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status_code == 401 and not wants_json(request):
        target = "/login?next=" + quote(_return_to(request), safe="/")
        if "hx-request" in request.headers:
            return Response(status_code=401, headers={**headers, "HX-Redirect": target})
        return RedirectResponse(target, status_code=303, headers=headers)
    if wants_json(request):
        if request.url.path in GESTALTMATCHER_PATHS:
            # GestaltMatcher clients read errors from "message"; the contract's fields stay as well.
            extra = {"message": detail, **extra}
            if status_code == 401:
                headers["WWW-Authenticate"] = 'Basic realm="GestaltLens"'
        return JSONResponse({"detail": detail, "code": code, **extra}, status_code=status_code, headers=headers)
    from app.web.templating import render  # late import: templating imports request helpers

    context = {"status_code": status_code, "detail": detail, "code": code}
    if "hx-request" in request.headers:
        # An htmx request lands in some element of a page (a grid, a card, a table row): a whole page with its
        # navigation pasted there breaks the page, so every such error is a small fragment, and app.js puts it
        # beside the element instead of replacing it (the header marks it), so the next request still works.
        response = render(request, "_error_fragment.html", context, status_code)
        response.headers.update({**headers, "X-Error-Fragment": "1"})
        return response
    return render(request, "error.html", context, status_code)


_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_TEXT = ("database or disk is full", "no space left on device", "disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """The disk (or quota) under the data directory or the database is full, anywhere in the cause chain:
    ``OSError`` ENOSPC/EDQUOT, SQLite's SQLITE_FULL, PostgreSQL's ``disk_full`` (SQLSTATE 53100)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
            return True
        if getattr(current, "sqlstate", None) == "53100" or any(text in str(current).lower()
                                                                  for text in _DISK_FULL_TEXT):
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


def _storage_full(request: Request) -> Response:
    # A state of the server, not a fault in the request: 507 with a code operators and clients can act on.
    # Nothing half-written stays behind (uploads remove their files when the commit fails).
    log.error("storage full on %s %s", request.method, request.url.path)
    response = error_response(request, 507, "storage_full",
                              "The server's storage is full; nothing was saved. Try again once space is freed.")
    response.headers["Retry-After"] = "60"
    return response


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)  # every subclass too: ApiError, NotFound, the registry's UnknownMethod
    async def _domain_error(request: Request, exc: DomainError) -> Response:
        return error_response(request, exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _STATUS_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 413:
            detail = "The request body is larger than this server accepts."
        return error_response(request, exc.status_code, code, detail)

    @app.exception_handler(UnstorableText)
    async def _control_chars(request: Request, exc: UnstorableText) -> Response:
        return error_response(request, 422, "invalid_request",
                              "Invalid request: text must not contain NUL or control characters.")

    @app.exception_handler(sa_exc.TimeoutError)
    async def _database_busy(request: Request, exc: Exception) -> Response:
        # Every pooled connection is in use: the database is up, this server is saturated. Not "unavailable",
        # which sends operators looking at the wrong machine.
        log.warning("database pool exhausted on %s %s", request.method, request.url.path)
        response = error_response(request, 503, "database_busy",
                                  "The server is busy (every database connection is in use); try again shortly.")
        response.headers["Retry-After"] = "2"
        return response

    @app.exception_handler(OSError)
    async def _os_error(request: Request, exc: OSError) -> Response:
        if not is_disk_full(exc):
            raise exc  # any other OSError stays an internal error (the JSON 500 of the security middleware)
        return _storage_full(request)

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    @app.exception_handler(sa_exc.DisconnectionError)
    async def _database_down(request: Request, exc: Exception) -> Response:
        if is_disk_full(exc):
            return _storage_full(request)
        # Connection refused, reset or timed out, pool exhausted, SQLite file unusable: the database, not the
        # request, is at fault, and the client may retry; /readyz tells operators the same.
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc.__class__.__name__)
        response = error_response(request, 503, "database_unavailable",
                                  "The database is unavailable; try again in a moment.")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        detail = "Invalid request: " + "; ".join(problems)
        return error_response(request, 422, "invalid_request", detail)
