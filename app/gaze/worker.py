"""The ``gaze_import`` job: a large fixation file, checked, prepared and landed in the background with progress.

Three steps, each in its own short session so no connection is held while the CPU works
(:mod:`app.gaze.importer`): check the whole file (read-only; then the resolved case ids go into the payload so
an erasure matches the job exactly), map the rows (no session), land them in one transaction. Progress: the
file is read 5 %, checked 30 %, prepared 40 %, landed chunk by chunk to 95 %, committed 100 %.

On PostgreSQL each landed chunk writes progress (another connection: the import's uncommitted rows lock
nothing a progress write needs). SQLite has one writer at a time: a progress write from another connection
would wait on the import's own transaction, so there the landing (a few seconds of bulk inserts even for the
largest file) reports no progress of its own.

The landing transaction also writes ``import_id`` into the job's payload, and only while the job is still
running and held by this worker: an import whose job was cancelled meanwhile (a case of the file was erased)
rolls back instead of landing.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import update

from app.auth.models import User
from app.db import utcnow
from app.gaze import importer
from app.gaze.import_jobs import KIND, options_from, remove_upload, upload_path
from app.gaze.service import GazeError, ImportOptions
from app.jobs import lanes
from app.jobs import service as job_service
from app.jobs.models import RUNNING, Job
from app.jobs.registry import WorkerContext, handler


def _note(context: WorkerContext, job: Job, **values: object) -> None:
    """Add ``values`` to the job's payload (its own short transaction) while it runs."""
    with context.sessions() as session:
        row = session.get(Job, job.id)
        if row is not None and row.state == RUNNING:
            row.payload = {**(row.payload or {}), **values}
            session.commit()


def _user(session, job: Job) -> User:  # type: ignore[no-untyped-def]
    user = session.get(User, job.owner_id) if job.owner_id is not None else None
    if user is None or not user.is_active or not user.is_admin:
        raise RuntimeError("the admin who started this import no longer exists, is deactivated or no longer an admin; "
                           "nothing imported")
    return user


@handler(KIND, on_failure=remove_upload, lane="batch")
def run_gaze_import(job: Job, context: WorkerContext) -> None:
    path = upload_path(context.settings.data_dir, job.payload)
    try:
        _import(job, context, path)
    except GazeError as exc:  # the job fails with the detail; the code and the report stay readable
        _note(context, job, code=exc.code, report=exc.report)
        raise
    finally:
        path.unlink(missing_ok=True)


def _import(job: Job, context: WorkerContext, path: Path) -> None:
    payload = dict(job.payload)
    write = job_service.progress_writer(context.sessions, job.id, job.worker)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RuntimeError("the uploaded file is gone (a case it names was erased); nothing imported") from None
    write(0.05)
    options = options_from(payload)
    with context.sessions() as session:
        checked = importer.check_file(session, data=data, options=options, user=_user(session, job),
                                      digest=payload.get("sha256"))
    del data
    payload["case_ids"] = checked.case_ids
    _note(context, job, case_ids=checked.case_ids)
    write(0.3)
    rows = importer.prepare(checked)
    write(0.4)  # the last place to yield to interactive work: the landing's transaction must not wait
    contextvars.copy_context().run(_land, job, context, payload, checked, rows, options, write)
    write(1.0)


def _land(job: Job, context: WorkerContext, payload: dict, checked: importer.CheckedFile,  # type: ignore[type-arg]
          rows: importer.PreparedRows, options: ImportOptions, write: Callable[[float], None]) -> None:
    """One transaction: the rows, the import, and ``import_id`` in the payload while the job is still held.

    Run in a copy of the thread's context with the lane checkpoint off: a batch job run inline waits at its
    progress writes while interactive work runs (app.jobs.lanes), and waiting inside this transaction would hold
    its locks (an erasure of a case in the file, a second import of the same participants) for as long."""
    lanes.set_checkpoint(None)
    with context.sessions() as session:
        importer.check_new(session, checked.sha256)  # a small copy of the file may have landed meanwhile
        concurrent = session.get_bind().dialect.name != "sqlite"
        row = importer.land(session, checked=checked, rows=rows, filename=str(payload.get("filename") or "upload"),
                            options=options, user=_user(session, job), ip=payload.get("ip"),
                            on_chunk=(lambda done, total: write(0.4 + 0.55 * done / total)) if concurrent else None)
        held = session.execute(
            update(Job).where(Job.id == job.id, Job.state == RUNNING, Job.worker == job.worker)
            .values(payload={**payload, "import_id": row.id}, updated_at=utcnow())).rowcount
        if not held:
            session.rollback()
            raise RuntimeError("the import was cancelled meanwhile (a case it names was erased); nothing imported")
        session.commit()
