"""The HTTP protocol uvicorn serves with: its own, except that the 400 it answers by itself is our JSON error.

Why: a request uvicorn cannot parse (a control character in a header, obsolete header folding, a path that
is not valid UTF-8 or ASCII, a malformed cookie line) never reaches the ASGI app, so neither the JSON error
contract nor the security headers applied: uvicorn wrote ``text/plain`` "Invalid HTTP request received."
without CSP, ``nosniff`` or ``no-store``. Both of uvicorn's parsers send that answer from one method,
``send_400_response``; the subclasses here replace only it, with the same status and connection handling.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional for uvicorn
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from app.web.headers import SECURITY_HEADERS

_DETAIL = "Invalid request: the server could not parse it (malformed request line, header or path)."


def bad_request_bytes() -> bytes:
    """A complete HTTP/1.1 400 response: ``{"detail","code"}``, the security headers, no-store, close."""
    body = json.dumps({"detail": _DETAIL, "code": "bad_request"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), (b"connection", b"close"), *SECURITY_HEADERS]
    return b"HTTP/1.1 400 Bad Request\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + body


class JsonErrorsH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(bad_request_bytes())
        self.transport.close()


if HttpToolsProtocol is not None:

    class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            self.transport.write(bad_request_bytes())
            self.transport.close()


def http_protocol() -> type:
    """What ``uvicorn.run(http=...)`` gets: httptools' protocol where installed (uvicorn's "auto"), else h11's."""
    return JsonErrorsH11Protocol if HttpToolsProtocol is None else JsonErrorsHttpToolsProtocol
