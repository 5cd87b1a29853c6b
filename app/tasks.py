"""Every kind of background job, registered from the top.

Importing this module imports each domain's worker module, whose ``@handler`` decorators register the job
kinds in :mod:`app.jobs.registry` (which itself knows no domain). The web factory, ``gestaltlens worker``
(Celery) and any command that runs jobs import it before the first job runs. It also says how a Celery
worker process builds its :class:`~app.jobs.registry.WorkerContext` (photo store, model provider), so the
jobs package needs neither.

A new job kind: write ``app/<domain>/worker.py`` with ``@handler("kind", on_failure=..., lane=...)`` and add
its import below.
"""

from __future__ import annotations

import app.cohorts.worker
import app.demo.worker
import app.evaluations.worker
import app.explanations.worker
import app.gaze.worker
import app.matching.worker  # noqa: F401
from app.cases.storage import PhotoStore
from app.jobs import celery_app
from app.jobs.registry import WorkerContext
from app.predictions.provider import ModelProvider
from app.settings import Settings


def worker_context(settings: Settings) -> WorkerContext:
    """The context of one Celery worker process: its own database sessions, the photo store, the model."""
    from app.db import make_engine, make_sessionmaker

    settings.ensure_dirs()
    return WorkerContext(
        settings=settings,
        sessions=make_sessionmaker(make_engine(settings.resolved_database_url)),
        photo_store=PhotoStore(settings.photo_dir),
        models=ModelProvider(settings.models_dir, settings.model),
    )


celery_app.set_context_factory(worker_context)
