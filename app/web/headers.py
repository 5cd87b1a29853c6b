"""Strict security headers on every response.

The CSP allows scripts and styles only from our own origin (htmx is vendored into ``static/``), so the
templates carry no inline script or style attribute. Patient data must not sit in shared caches.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), interest-cohort=()"),
]


#: Paths whose responses carry no patient data and may be cached: vendored files and the colour bars.
CACHEABLE_PREFIXES = ("/static/", "/api/v1/colorbars/")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Only these may be cached (no patient data in them); every other response is no-store whatever
        # its route set, so a route cannot leak patient pixels into a browser cache that outlives logout
        # and erasure (a photo-space overlay once did, for an hour).
        is_static = scope["path"].startswith(CACHEABLE_PREFIXES)

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = message.setdefault("headers", [])
                if not is_static:
                    values = [value for name, value in headers if name.lower() == b"cache-control"]
                    if not (len(values) == 1 and b"no-store" in values[0].lower()):
                        headers[:] = [(n, v) for n, v in headers if n.lower() != b"cache-control"]
                        headers.append((b"cache-control", b"no-store"))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # An unhandled error would otherwise reach Starlette's outermost handler, which answers in plain
            # text and without these headers. Answer in the contract's shape here (when nothing was sent yet),
            # then re-raise so the server still logs the traceback.
            if not started:
                body = b'{"detail":"Internal server error.","code":"internal_error"}'
                await send_with_headers({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
            raise
