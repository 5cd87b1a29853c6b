"""Job kinds → handlers. The one registry of background work: a domain adds a kind with ``@handler``.

A handler gets the job (detached, read-only) and a :class:`WorkerContext` and does the work; raising
fails the job with the exception's message. A kind may also register an ``on_failure`` hook: however a
job of that kind fails (its handler raised, it was interrupted too often, the broker was unreachable),
the hook runs in the same transaction, so the domain's own rows never stay "pending" behind a dead job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.cases.storage import PhotoStore
from app.jobs.models import Job
from app.predictions.provider import ModelProvider
from app.settings import Settings

Handler = Callable[[Job, "WorkerContext"], None]
FailureHook = Callable[[Session, Job], None]
HANDLERS: dict[str, Handler] = {}
FAILURE_HOOKS: dict[str, FailureHook] = {}


def handler(kind: str, *, on_failure: FailureHook | None = None) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        if kind in HANDLERS:
            raise ValueError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = function
        if on_failure is not None:
            FAILURE_HOOKS[kind] = on_failure
        return function

    return register


def load_handlers() -> None:
    """Import the modules that register job kinds (not at import time: they import domain code)."""
    import app.cohorts.worker
    import app.demo.worker
    import app.evaluations.worker
    import app.explanations.worker  # noqa: F401


@dataclass
class WorkerContext:
    """What a worker holds for its whole life: one per inline runner thread or Celery worker process.

    ``cache`` keeps per-worker heavy objects (the explainer's private model copy) between jobs.
    """

    settings: Settings
    sessions: sessionmaker[Session]
    photo_store: PhotoStore
    models: ModelProvider
    cache: dict[str, Any] = field(default_factory=dict)
