"""The Celery application used by ``gestaltlens worker`` (the scale-out job runner).

Only the broker connection lives here for now; the job table and the explanation tasks that workers
run arrive with the jobs issue. Workers are started one model instance per process, so the pool is
``prefork`` with a concurrency the operator chooses.
"""

from __future__ import annotations

from celery import Celery

from app.settings import Settings, get_settings


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    celery = Celery("gestaltlens", broker=settings.broker_url, backend=None)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
    )
    return celery
