"""CSRF defence for cookie-authenticated, state-changing requests.

Two independent checks, both required:
1. the request comes from our own origin (``Origin`` / ``Sec-Fetch-Site`` — browsers set them and pages
   cannot forge them);
2. it carries ``X-CSRF-Token`` equal to an HMAC of the ``gl_csrf`` cookie (a signed double-submit token;
   htmx and the upload script add the header from the page's meta tag).
Requests authenticated by a header the browser never adds on its own are exempt: a non-empty Bearer
token anywhere, and HTTP Basic only on the GestaltMatcher routes (a browser re-sends Basic credentials it
once typed in, so Basic elsewhere would be an ambient credential). :func:`header_credentials` decides this
for the middleware and for ``app.web.deps`` alike, so a request is exempt exactly when its cookie is not
used. Anonymous requests are checked too on ``/login`` and ``/setup`` (login CSRF).
"""

from __future__ import annotations

import secrets

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.security import constant_time_equal, sign

CSRF_COOKIE = "gl_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_COOKIE = "gl_session"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
ANONYMOUS_FORM_PATHS = ("/login", "/setup")
#: The GestaltMatcher-service routes: the only ones where HTTP Basic authenticates (its clients send it).
BASIC_AUTH_PATHS = frozenset({"/predict", "/encode", "/crop", "/status"})


def header_credentials(path: str, authorization: str | None) -> tuple[str, str] | None:
    """(scheme, credentials) when the ``Authorization`` header authenticates this request, else None (the
    session cookie, if any, does). An empty header or an unusable scheme never skips the cookie's checks."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == "bearer":
        return "bearer", credentials
    if scheme.lower() == "basic" and path in BASIC_AUTH_PATHS:
        return "basic", credentials
    return None


def csrf_token_for(secret: str, cookie_value: str) -> str:
    return sign(secret, "csrf:" + cookie_value)


def _cookies(headers: Headers) -> dict[str, str]:
    """The cookies as authentication reads them (Starlette's lenient parser, as ``request.cookies``), from every
    Cookie header (authentication reads the first; checking more only adds checks).

    ``http.cookies.SimpleCookie`` drops the *whole* header when one cookie in it is malformed (a space, a quote,
    a brace — ``theme=dark mode``): the session cookie then looked absent here while authentication still found
    it, so a signed-in request skipped every CSRF check. Every Cookie header counts (joined), so a session cookie
    sent in a second header is checked too."""
    return cookie_parser("; ".join(headers.getlist("cookie")))


def _same_origin(scope: Scope, headers: Headers) -> bool:
    site = headers.get("sec-fetch-site")
    if site is not None and site not in {"same-origin", "none"}:
        return False
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = headers.get("host", "")
    return origin in {f"http://{host}", f"https://{host}"}


class CsrfMiddleware:
    def __init__(self, app: ASGIApp, secret: str, secure_cookies: bool = False) -> None:
        self.app = app
        self.secret = secret
        self.secure_cookies = secure_cookies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        cookies = _cookies(headers)
        cookie_value = cookies.get(CSRF_COOKIE)
        is_new = not cookie_value or len(cookie_value) < 20
        if is_new:
            cookie_value = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf_token"] = csrf_token_for(self.secret, cookie_value)

        if self._needs_check(scope, headers, cookies):
            sent = headers.get(CSRF_HEADER, "")
            if is_new or not _same_origin(scope, headers) or not constant_time_equal(
                sent, csrf_token_for(self.secret, cookie_value)
            ):
                response = JSONResponse(
                    {
                        "detail": "Cross-site request refused. Reload the page and try again.",
                        "code": "csrf_failed",
                    },
                    status_code=403,
                )
                await response(scope, receive, send)
                return

        async def send_with_cookie(message: Message) -> None:
            if is_new and message["type"] == "http.response.start":
                flags = "; Secure" if self.secure_cookies or scope.get("scheme") == "https" else ""
                cookie = f"{CSRF_COOKIE}={cookie_value}; Path=/; HttpOnly; SameSite=Strict{flags}"
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    @staticmethod
    def _needs_check(scope: Scope, headers: Headers, cookies: dict[str, str]) -> bool:
        if scope["method"] not in UNSAFE_METHODS or header_credentials(scope["path"], headers.get("authorization")):
            return False
        return SESSION_COOKIE in cookies or scope["path"] in ANONYMOUS_FORM_PATHS
