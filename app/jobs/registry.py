"""Job kinds → handlers. The one registry of background work: a domain adds a kind with ``@handler``.

The registry knows no domain. The domains' worker modules register their kinds when they are imported, and
one top-level module, :mod:`app.tasks`, imports them all; the web factory, ``gestaltlens worker`` (Celery) and
any command that runs jobs import :mod:`app.tasks` first. A job whose kind nobody registered fails with
"no handler" instead of importing code from here.

A handler gets the job (detached, read-only) and a :class:`WorkerContext` and does the work; raising
fails the job with the exception's message. A kind may also register an ``on_failure`` hook: however a
job of that kind fails (its handler raised, it was interrupted too often, the broker was unreachable),
the hook runs in the same transaction, so the domain's own rows never stay "pending" behind a dead job.
:func:`fail_unfinished` builds the usual hook.

Each kind also declares its ``lane`` (:mod:`app.jobs.lanes`): ``"interactive"`` for work a person waits for at a
page, ``"batch"`` (the default) for everything else. The job row records it when the job is created.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.jobs.lanes import BATCH, check_lane
from app.jobs.models import FAILED, QUEUED, RUNNING, Job
from app.settings import Settings

if TYPE_CHECKING:
    from app.nets.registry import LoadedModel

Handler = Callable[[Job, "WorkerContext"], None]
FailureHook = Callable[[Session, Job], None]


@dataclass(frozen=True)
class JobKind:
    """One registered kind of job."""

    kind: str
    run: Handler
    on_failure: FailureHook | None = None
    lane: str = BATCH


KINDS: dict[str, JobKind] = {}


def handler(kind: str, *, on_failure: FailureHook | None = None,
            lane: str = BATCH) -> Callable[[Handler], Handler]:
    """Register ``function`` as the handler of ``kind`` (once per kind)."""
    check_lane(lane)

    def register(function: Handler) -> Handler:
        if kind in KINDS:
            raise ValueError(f"job kind {kind!r} registered twice")
        KINDS[kind] = JobKind(kind, function, on_failure, lane)
        return function

    return register


def lane_of(kind: str) -> str:
    """The lane of a kind; an unregistered kind is batch (its job fails with "no handler" when run)."""
    registered = KINDS.get(kind)
    return registered.lane if registered is not None else BATCH


def failure_hook(kind: str) -> FailureHook | None:
    registered = KINDS.get(kind)
    return registered.on_failure if registered is not None else None


class _JobRows(Protocol):
    """A domain table whose rows a job computes: ``job_id``, ``state``, ``error``, ``finished_at``."""

    job_id: Any
    state: Any
    error: Any
    finished_at: Any


def fail_unfinished(table: type[_JobRows]) -> FailureHook:
    """The usual ``on_failure`` hook: the rows of ``table`` this job was computing (still queued or running)
    fail with the job's error, so they can be asked for again."""

    def hook(session: Session, job: Job) -> None:
        query = select(table).where(table.job_id == job.id, table.state.in_((QUEUED, RUNNING)))
        for row in session.scalars(query):
            row.state, row.error, row.finished_at = FAILED, job.error or "the job failed", utcnow()

    hook.__doc__ = f"However the job fails, its unfinished {getattr(table, '__tablename__', table)} rows fail with it."
    return hook


class FileStore(Protocol):
    """What workers need of the photo store (:class:`app.cases.storage.PhotoStore` is one)."""

    def read(self, relative: str) -> bytes: ...
    def write(self, case_id: str, name: str, data: bytes) -> str: ...
    def remove_case(self, case_id: str) -> None: ...


class ModelSource(Protocol):
    """What workers need of the model provider (:class:`app.predictions.provider.ModelProvider` is one)."""

    def get(self) -> LoadedModel: ...


@dataclass
class WorkerContext:
    """What a worker holds for its whole life: one per inline runner thread or Celery worker process.

    ``cache`` keeps per-worker heavy objects (the explainer's private model copy) between jobs.
    """

    settings: Settings
    sessions: sessionmaker[Session]
    photo_store: FileStore
    models: ModelSource
    cache: dict[str, Any] = field(default_factory=dict)

    def model(self) -> LoadedModel:
        """The served model; a model that cannot be served fails the job with the provider's reason."""
        try:
            return self.models.get()
        except Exception as exc:
            raise RuntimeError(str(exc) or type(exc).__name__) from exc
