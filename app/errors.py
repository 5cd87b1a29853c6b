"""The one domain error: what every service (and the method registry) raises when it refuses a request.

A refusal is a stable machine ``code`` (part of the HTTP contract, DESIGN.md), a sentence a person can act
on (``detail``), the HTTP status that code means, and optional extra fields for the JSON answer. The web layer
has one exception handler that turns it into ``{"detail", "code", ...extra}`` (or the error page, for
browsers); services never import the web layer to say "404".

This module sits at the bottom of the dependency graph and imports only the standard library, so the ML core
(``app.explain``'s registry) may raise it as well as the domains, the jobs and the CLI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Conflict", "DomainError", "Forbidden", "NotFound", "Unavailable"]


class DomainError(Exception):
    """A refused request: ``code`` (stable), ``detail`` (shown verbatim), ``status`` (HTTP), ``extra`` (JSON).

    ``status`` defaults to the class's ``status`` (422 for the base: the request itself is wrong). ``extra``
    goes into the JSON answer beside ``detail`` and ``code``, e.g. ``report=...`` for a refused gaze import.
    """

    status: int = 422

    def __init__(self, code: str, detail: str, status: int | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        legacy = extra.pop("status_code", None)  # the old ApiError keyword: a status, never an extra field
        if status is None and legacy is not None:
            status = int(legacy)
        self.status = type(self).status if status is None else status
        self.extra = extra

    @property
    def status_code(self) -> int:
        """The same as ``status`` (the name Starlette's exceptions and the pages' render calls use)."""
        return self.status

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r}, status={self.status})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other arguments (NotFound(what)); rebuild from the fields so that an error crossing a
        # process boundary (a Celery result, a multiprocessing pool) arrives whole instead of failing to unpickle.
        return _rebuild, (type(self), self.code, self.detail, self.status, self.extra, self.__dict__)


def _rebuild(cls: type[DomainError], code: str, detail: str, status: int, extra: dict[str, Any],
             state: dict[str, Any]) -> DomainError:
    error = cls.__new__(cls)
    DomainError.__init__(error, code, detail, status, **extra)
    error.__dict__.update(state)
    return error


class NotFound(DomainError):
    """404 ``not_found``: no such thing, or one the caller may not see (the two are not told apart)."""

    status = 404

    def __init__(self, what: str = "resource") -> None:
        super().__init__("not_found", f"No such {what}.")


class Forbidden(DomainError):
    """403: the caller may see the thing but not do this with it."""

    status = 403


class Conflict(DomainError):
    """409: the request is fine but the thing is not in a state that allows it (not ready, in a study ...)."""

    status = 409


class Unavailable(DomainError):
    """503: something the request needs (the served model, the job queue) is not available now."""

    status = 503
