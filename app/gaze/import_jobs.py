"""Fixation files too large for a request are imported by a ``gaze_import`` job (issue 20, item 12).

The request only looks at the file cheaply (:func:`sniff`: size, duplicate, text, format and columns from the
first lines, the options the format needs), refusing bad input with the usual 4xx and code and leaving nothing
behind. It then stores the raw upload under ``<data dir>/gaze_uploads/`` (never in the job's payload: up to
50 MiB of JSON in the ``jobs`` table would be read by every poll) and creates the job; the handler
(:mod:`app.gaze.worker`) checks, prepares and lands the file with progress, and the upload is removed however
the job ends (the handler's ``finally``, the kind's failure hook, or a case's erasure).

The job's payload carries what it needs and, as it goes, what it found: ``case_ids`` once the file's cases are
resolved, ``import_id`` (in the landing transaction itself) when it landed, ``code`` and ``report`` when it was
refused — so the outcome is read from the job (:func:`job_view`) the same way a small import's answer is read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.erasure import Erasure
from app.cases.models import Case
from app.db import utcnow
from app.gaze import importer, parsers
from app.gaze.models import GazeImport
from app.gaze.service import GazeError, ImportOptions, import_out
from app.jobs import service as job_service
from app.jobs.models import FAILED, QUEUED, RUNNING, Job
from app.jobs.outlook import outlook_for

KIND = "gaze_import"

#: Files above either bound are imported by a job. The cost is per fixation row. The in-request import measured
#: 72 s (SQLite) and 126 s (PostgreSQL) for 250,000 rows (issue 20); with the bulk landing of
#: :mod:`app.gaze.importer` the same file takes about 5 s on SQLite (check 1.4 s, mapping 0.4 s, landing 2.5-3.4 s)
#: and 11 s on PostgreSQL (landing 9-10 s), measured on the shared 2-core machine under load. 20,000 lines are
#: then at most ~0.5 s (SQLite) and ~1 s (PostgreSQL) inside a request, and a request holds SQLite's single
#: write lock for well under a second (other writers wait at most ``busy_timeout``, 5 s); anything larger gets
#: a job with progress instead of a browser spinning for seconds to minutes on a held connection and thread.
#: Lines are counted, not fixations (counting those needs the whole parse): a Tobii export writes one line per
#: gaze sample and folds ~20 into a fixation, so a long export is over-counted, never under-counted. The byte
#: bound catches files of few, very long lines (decoding and splitting 8 MiB take about a second). Typical
#: per-session exports (hundreds to a few thousand fixations) and every earlier test file stay synchronous
#: (201, as before).
JOB_LINES = 20_000
JOB_BYTES = 8 * 2**20
UPLOAD_DIR = "gaze_uploads"
#: A stored upload no pending job refers to is removed once it is this old (see :func:`sweep_uploads`).
ORPHAN_GRACE_S = 3600.0
#: How much of the file the request reads as the format (header, columns, options): the first lines only.
SNIFF_CHARS = 64 * 1024
CANCELLED = ("Cancelled: a case this file names was erased while the import waited; nothing imported (import the "
             "file again for the remaining cases).")


def needs_job(data: bytes) -> bool:
    return len(data) > JOB_BYTES or data.count(b"\n") > JOB_LINES


def options_from(payload: dict[str, Any]) -> ImportOptions:
    given = dict(payload.get("options") or {})
    if given.get("rect") is not None:
        given["rect"] = tuple(float(v) for v in given["rect"])
    return ImportOptions(**given)


def pending_jobs(session: Session, *, lock: bool = False) -> list[Job]:
    """Import jobs still queued or running (oldest first); ``lock``: held until the transaction ends."""
    query = select(Job).where(Job.kind == KIND, Job.state.in_((QUEUED, RUNNING))).order_by(Job.created_at)
    return list(session.scalars(query.with_for_update() if lock else query))


def sniff(session: Session, *, data: bytes, options: ImportOptions) -> dict[str, Any]:
    """The checks that cost no more than reading the file once: size, a file imported before or being imported,
    binary content, the format, its columns and the options it needs (from the first lines). Raises
    :class:`GazeError` (4xx with a code) like the full import would; the full check runs in the job."""
    importer.check_size(data)
    sha = hashlib.sha256(data).hexdigest()
    importer.check_new(session, sha)
    for job in pending_jobs(session):
        if (job.payload or {}).get("sha256") == sha and not job_service.is_lost(session, job):
            raise GazeError("duplicate_import", f"This file is being imported already (job {job.id}): nothing "
                            "imported.", 409, report={"job_id": job.id})
    text = importer.decode(data)
    head = text[:SNIFF_CHARS]
    if len(text) > SNIFF_CHARS and "\n" in head:
        head = head[:head.rindex("\n") + 1]  # whole lines only
    try:
        parsed = parsers.parse(head, options.format, space=options.space, rect=options.rect,
                               participant=options.participant, stimulus=options.case,
                               stimulus_column=options.stimulus_column)
    except parsers.ParseError as exc:
        if exc.code != "malformed_file":  # a quoted field may straddle the cut: the whole file decides that
            raise GazeError(exc.code, exc.detail + " Nothing imported.", report={"problem": exc.code}) from exc
        parsed = None
    return {"sha256": sha, "format": parsed.format if parsed else options.format, "bytes": len(data),
            "lines": data.count(b"\n")}


def upload_path(data_dir: Path, payload: dict[str, Any]) -> Path:
    return Path(data_dir) / str(payload["upload"])


def store_upload(data_dir: Path, data: bytes) -> str:
    """The raw file, owner-readable only, under a random name; returns its path relative to the data dir."""
    folder = Path(data_dir) / UPLOAD_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    relative = f"{UPLOAD_DIR}/{secrets.token_hex(16)}.upload"
    fd = os.open(Path(data_dir) / relative, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return relative


def discard_upload(data_dir: Path, payload: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, KeyError):
        upload_path(data_dir, payload).unlink(missing_ok=True)


def sweep_uploads(session: Session, data_dir: Path, *, grace_s: float = ORPHAN_GRACE_S) -> list[Path]:
    """Remove stored uploads that no pending job refers to and that are older than ``grace_s`` (a process
    killed between storing a file and committing its job, or a job row deleted by hand); returns them. The
    grace spares an upload whose job another web process is about to commit."""
    folder = Path(data_dir) / UPLOAD_DIR
    if not folder.is_dir():
        return []
    wanted = {upload_path(data_dir, job.payload).name for job in pending_jobs(session)
              if "upload" in (job.payload or {})}
    horizon = time.time() - grace_s
    removed = []
    for path in folder.iterdir():
        with contextlib.suppress(OSError):
            if path.name not in wanted and path.stat().st_mtime <= horizon:
                path.unlink()
                removed.append(path)
    return removed


def start_import(session: Session, *, data: bytes, filename: str, options: ImportOptions, user: User,
                 ip: str | None, data_dir: Path) -> Job:
    """Sniff the file, store it and create its job (not committed: the caller commits, then submits; if the
    commit fails it calls :func:`discard_upload` with the job's payload). Orphaned uploads are swept first."""
    found = sniff(session, data=data, options=options)
    sweep_uploads(session, data_dir)
    relative = store_upload(data_dir, data)
    payload = {"upload": relative, "upload_path": str((Path(data_dir) / relative).resolve()),
               "filename": filename[:200], "options": options.to_dict(), "ip": ip, **found}
    try:
        return job_service.create_job(session, kind=KIND, payload=payload, owner=user)
    except Exception:
        discard_upload(data_dir, payload)
        raise


def remove_upload(session: Session, job: Job) -> None:
    """The kind's failure hook: however the job fails (refused file, interrupted too often, broker down), its
    stored upload goes. The absolute path is the one the web process wrote (the hook gets no settings)."""
    with contextlib.suppress(OSError, KeyError, TypeError):
        Path((job.payload or {})["upload_path"]).unlink(missing_ok=True)


def job_view(session: Session, job: Job) -> dict[str, Any]:
    """The job (state, progress, error) with its import once landed, or the refusal's code and report."""
    payload = job.payload or {}
    row = session.get(GazeImport, payload["import_id"]) if payload.get("import_id") else None
    return {"job": job_service.job_out(job, outlook_for(session, job)), "filename": payload.get("filename"),
            "format": payload.get("format"), "lines": payload.get("lines"),
            "import": import_out(row) if row is not None else None, "code": payload.get("code"),
            "report": payload.get("report")}


def _names(case: Case | None, case_id: str) -> list[bytes]:
    names = {case_id.encode()}
    if case is not None and case.pseudonym:
        names |= {case.pseudonym.encode("utf-8"), case.pseudonym.encode("latin-1", "ignore")}
    return sorted(n for n in names if n)


def _mentions(payload: dict[str, Any], case_id: str, names: list[bytes], data_dir: Path) -> bool:
    """Whether a pending import names the case: exactly once its cases are resolved, before that by the case's
    id or pseudonym standing alone anywhere in the file or the options (erring towards cancelling)."""
    if "case_ids" in payload:
        return case_id in payload["case_ids"]
    try:
        text = upload_path(data_dir, payload).read_bytes()
    except OSError:
        return True  # the file is gone: the job would fail anyway
    text += b"\n" + str((payload.get("options") or {}).get("case") or "").encode()
    pattern = rb"(?<![A-Za-z0-9])(?:" + b"|".join(re.escape(n) for n in names) + rb")(?![A-Za-z0-9])"
    return re.search(pattern, text) is not None


def purge_pending_imports(session: Session, erasure: Erasure) -> None:
    """Erasure: a pending import that names the case is cancelled (failed with :data:`CANCELLED`) and its stored
    file removed after the commit. One that has landed is left alone (its fixations of the case go with the
    case's rows). The case row is locked first, so on PostgreSQL an import landing rows of this case finishes
    (or fails) before the jobs are read, and the two transactions cannot deadlock on the job row."""
    if not pending_jobs(session):
        return
    session.execute(select(Case.id).where(Case.id == erasure.case_id).with_for_update())
    names = _names(session.get(Case, erasure.case_id), erasure.case_id)
    for job in pending_jobs(session, lock=True):
        payload = job.payload or {}
        if payload.get("import_id") or not _mentions(payload, erasure.case_id, names, erasure.data_dir):
            continue
        job.state, job.error = FAILED, CANCELLED
        job.finished_at = job.updated_at = utcnow()
        if "upload" in payload:
            erasure.unlink(upload_path(erasure.data_dir, payload))
