"""Job kinds → handlers. The one registry of background work: a domain adds a kind with ``@handler``.

A handler gets the job (detached, read-only) and a :class:`WorkerContext` and does the work; raising
fails the job with the exception's message. It reports progress through ``context.progress(job)``.
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
HANDLERS: dict[str, Handler] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        if kind in HANDLERS:
            raise ValueError(f"job kind {kind!r} registered twice")
        HANDLERS[kind] = function
        return function

    return register


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
