"""A fixation file's import in three steps: check it whole, prepare its rows, land them in one transaction.

``import_fixations`` runs the three in one session (small files, inside the request, and the CLI); the
``gaze_import`` job (:mod:`app.gaze.worker`) runs them apart, reporting progress, so that no session is held
while the file is parsed and the rows are mapped. Either way a file lands whole or not at all: every check runs
before the first row is written, and the rows go in with the import row in one transaction.

Landing uses bulk ``INSERT`` statements of :data:`CHUNK` rows (the ORM's unit of work, one object and one
``RETURNING`` per fixation, made 250,000 rows take 72 s on SQLite), and the photo → aligned mapping is
vectorised over the whole file.

Service functions take keyword arguments and a session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.evaluate.gaze_maps import SIZE
from app.gaze import parsers
from app.gaze.models import Fixation, GazeImport, Participant
from app.gaze.service import (
    CODE_PATTERN,
    IMPOSSIBLE,
    MAX_FILE_BYTES,
    GazeError,
    ImportOptions,
    add_participant,
    resolve_cases,
)

#: Fixations per INSERT statement (and per progress step of the job).
CHUNK = 5_000


@dataclass(frozen=True)
class CaseGeometry:
    """What mapping a fixation needs of its case (plain values: no session is held while preparing)."""

    id: str
    width: int
    height: int
    matrix: list[list[float]]  # photo → aligned, 2x3


@dataclass
class CheckedFile:
    """A file that passed every check: its fixations, the cases and participants they name."""

    sha256: str
    format: str
    report: dict[str, Any]
    fixations: list[parsers.RawFixation]
    cases: dict[str, CaseGeometry]  # stimulus name → case
    participants: dict[str, int]  # registered code → participant id
    new_participants: list[str]  # codes to register (in ``group``) when the file lands

    @property
    def case_ids(self) -> list[str]:
        return sorted({c.id for c in self.cases.values()})


@dataclass
class PreparedRows:
    """The rows to insert, column by column (participants by code: new ones get their id on landing)."""

    participant: list[str]
    case_id: list[str]
    seq: list[int]
    photo_x: np.ndarray
    photo_y: np.ndarray
    aligned_x: np.ndarray
    aligned_y: np.ndarray
    duration_ms: np.ndarray
    onset_ms: list[float | None]
    report: dict[str, Any]  # the file's report, completed with what was kept and dropped

    def __len__(self) -> int:
        return len(self.case_id)


def decode(data: bytes) -> str:
    """The file's text (UTF-8 with or without BOM, else Latin-1); a binary file is refused."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if "\x00" in text:
        raise GazeError("unknown_format", "This is not a text file of fixations: nothing imported.")
    return text


def check_size(data: bytes) -> None:
    if len(data) > MAX_FILE_BYTES:
        raise GazeError("too_large", f"Fixation files are at most {MAX_FILE_BYTES // 2**20} MiB.", 413)


def check_new(session: Session, sha: str) -> None:
    """Refuse a file imported before (by its SHA-256)."""
    earlier = session.scalar(select(GazeImport).where(GazeImport.sha256 == sha))
    if earlier is not None:
        raise GazeError("duplicate_import", f"This file was imported before ({earlier.filename}, import "
                        f"{earlier.id}, {earlier.fixations} fixations): nothing imported.", 409,
                        report={"duplicate_of": earlier.id})


def parse(text: str, options: ImportOptions) -> parsers.Parsed:
    try:
        return parsers.parse(text, options.format, space=options.space, rect=options.rect,
                             participant=options.participant, stimulus=options.case,
                             stimulus_column=options.stimulus_column)
    except parsers.ParseError as exc:
        raise GazeError(exc.code, exc.detail + " Nothing imported.", report={"problem": exc.code}) from exc


def check_file(session: Session, *, data: bytes, options: ImportOptions, user: User,
               digest: str | None = None) -> CheckedFile:
    """Every check of a file, reading only: size, duplicate, format, impossible values, the cases and
    participants it names. Raises :class:`GazeError` with a report; nothing is written."""
    check_size(data)
    sha = digest or hashlib.sha256(data).hexdigest()
    check_new(session, sha)
    parsed = parse(decode(data), options)
    report: dict[str, Any] = {"format": parsed.format, "rows": parsed.rows, "skipped": dict(parsed.skipped)}
    if parsed.impossible:
        report["impossible"] = {reason: {"rows": len(lines), "lines": lines[:20]}
                                for reason, lines in parsed.impossible.items()}
        described = "; ".join(f"{IMPOSSIBLE[reason]}: {len(lines)} row(s), line(s) {', '.join(map(str, lines[:5]))}"
                              for reason, lines in parsed.impossible.items())
        raise GazeError("impossible_values", f"Nothing imported: rows with impossible values ({described}).",
                        report=report)
    stimuli = list(dict.fromkeys(f.stimulus for f in parsed.fixations))
    cases, unknown_cases = resolve_cases(session, user=user, names=stimuli)
    codes = list(dict.fromkeys(f.participant for f in parsed.fixations))
    known = {p.code: p.id for p in session.scalars(select(Participant).where(Participant.code.in_(codes)))}
    unknown_people = [c for c in codes if c not in known]
    problems = []
    if unknown_cases:
        problems.append(f"unknown case(s): {', '.join(unknown_cases[:20])}")
    if unknown_people and options.group is None:
        problems.append(f"unregistered participant(s): {', '.join(unknown_people[:20])} (register them, or give "
                        "a group for new participants)")
    bad_codes = [c for c in unknown_people if not CODE_PATTERN.match(c)]
    if bad_codes:
        problems.append(f"participant code(s) that are not codes: {', '.join(bad_codes[:5])}")
    if not parsed.fixations:
        problems.append("no fixation in the file")
    if problems:
        report.update(unknown_cases=unknown_cases, unknown_participants=unknown_people)
        raise GazeError("import_refused", "Nothing imported: " + "; ".join(problems) + ".", report=report)
    geometry = {name: CaseGeometry(c.id, c.photo_width, c.photo_height, c.align_matrix) for name, c in cases.items()}
    return CheckedFile(sha, parsed.format, report, parsed.fixations, geometry, known, unknown_people)


def prepare(checked: CheckedFile) -> PreparedRows:
    """Photo pixels (undoing the stimulus rectangle or the normalisation) and aligned pixels of every fixation,
    vectorised; fixations outside their photo are counted and dropped, the rest numbered per (participant,
    case) in file order. Raises :class:`GazeError` when none is left."""
    fixations = checked.fixations
    case_ids = list(dict.fromkeys(c.id for c in checked.cases.values()))
    by_id = {c.id: c for c in checked.cases.values()}
    index = {cid: i for i, cid in enumerate(case_ids)}
    ci = np.fromiter((index[checked.cases[f.stimulus].id] for f in fixations), dtype=np.int64, count=len(fixations))
    widths = np.array([by_id[c].width for c in case_ids], dtype=np.float64)[ci]
    heights = np.array([by_id[c].height for c in case_ids], dtype=np.float64)[ci]
    matrices = np.array([by_id[c].matrix for c in case_ids], dtype=np.float64)[ci]
    x = np.array([f.x for f in fixations], dtype=np.float64)
    y = np.array([f.y for f in fixations], dtype=np.float64)
    normalised = np.array([f.space == parsers.NORMALISED for f in fixations])
    screen = np.array([f.space == parsers.SCREEN and f.rect is not None for f in fixations])
    rects = np.array([f.rect if f.rect is not None else (0.0, 0.0, 1.0, 1.0) for f in fixations], dtype=np.float64)
    px, py = x.copy(), y.copy()
    px[normalised], py[normalised] = x[normalised] * widths[normalised], y[normalised] * heights[normalised]
    left, top, width, height = (rects[screen, k] for k in range(4))
    px[screen] = (x[screen] - left) * widths[screen] / width  # the same order of operations as one at a time
    py[screen] = (y[screen] - top) * heights[screen] / height
    inside = (px >= 0) & (px < widths) & (py >= 0) & (py < heights)
    dropped: Counter[str] = Counter({"outside_photo": int((~inside).sum())} if not inside.all() else {})
    report = dict(checked.report)
    if not inside.any():
        report["skipped"] = dict(Counter(report["skipped"]) + dropped)
        raise GazeError("import_refused", "Nothing imported: every fixation lies outside its photo (check the "
                        "stimulus rectangle and coordinate space).", report=report)
    kept = np.flatnonzero(inside)
    px, py, m = px[kept], py[kept], matrices[kept]
    ax = m[:, 0, 0] * px + m[:, 0, 1] * py + m[:, 0, 2]
    ay = m[:, 1, 0] * px + m[:, 1, 1] * py + m[:, 1, 2]
    off_face = int((~((ax >= 0) & (ax < SIZE) & (ay >= 0) & (ay < SIZE))).sum())
    shown: dict[str, float] = {}  # case id → screen pixels per photo pixel (screen-space files)
    seq: Counter[tuple[str, str]] = Counter()
    participants, cases, numbers, onsets, durations = [], [], [], [], []
    for i in kept.tolist():
        fix = fixations[i]
        case = by_id[case_ids[ci[i]]]
        if fix.space == parsers.SCREEN and fix.rect is not None:
            shown.setdefault(case.id, round(fix.rect[2] / case.width, 6))
        seq[(fix.participant, case.id)] += 1
        participants.append(fix.participant)
        cases.append(case.id)
        numbers.append(seq[(fix.participant, case.id)])
        durations.append(max(0.0, fix.duration_ms))
        onsets.append(fix.onset_ms)
    report.update(fixations=len(kept), skipped=dict(Counter(report["skipped"]) + dropped), off_face=off_face,
                  participants=len(set(participants)), cases=len(set(cases)),
                  new_participants=checked.new_participants, shown_scale=shown)
    return PreparedRows(participants, cases, numbers, px, py, ax, ay, np.array(durations, dtype=np.float64), onsets,
                        report)


def land(session: Session, *, checked: CheckedFile, rows: PreparedRows, filename: str, options: ImportOptions,
         user: User, ip: str | None = None, study_id: str | None = None,
         on_chunk: Callable[[int, int], None] | None = None) -> GazeImport:
    """Register the new participants, add the import row and insert the rows in chunks of :data:`CHUNK`
    (``on_chunk(done, total)`` after each); audited. The caller commits (or rolls back: nothing stays)."""
    ids = dict(checked.participants)
    for code in checked.new_participants:
        ids[code] = add_participant(session, code=code, group=options.group or "").id
    row = GazeImport(format=checked.format, filename=filename[:200], sha256=checked.sha256,
                     options=options.to_dict(), report={}, fixations=0, study_id=study_id, created_by=user.id)
    session.add(row)
    session.flush()
    total = len(rows)
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        session.execute(insert(Fixation.__table__), [  # Core: no ORM bookkeeping per row
            {"import_id": row.id, "participant_id": ids[rows.participant[i]], "case_id": rows.case_id[i],
             "seq": rows.seq[i], "photo_x": float(rows.photo_x[i]), "photo_y": float(rows.photo_y[i]),
             "aligned_x": float(rows.aligned_x[i]), "aligned_y": float(rows.aligned_y[i]),
             "duration_ms": float(rows.duration_ms[i]), "onset_ms": rows.onset_ms[i]}
            for i in range(start, stop)])
        if on_chunk is not None:
            on_chunk(stop, total)
    row.fixations = total
    row.report = rows.report
    session.flush()
    audit.record(session, action="gaze_import", user=user, ip=ip,
                 detail={"import": row.id, "format": checked.format, "fixations": total})
    return row


def import_fixations(session: Session, *, data: bytes, filename: str, options: ImportOptions, user: User,
                     ip: str | None = None, study_id: str | None = None, digest: str | None = None) -> GazeImport:
    """Check the whole file, then add every fixation; on any refusal nothing is added.

    Refused: an unreadable file or format, missing columns, unknown cases or participants, a file imported
    before. Counted and dropped (the import goes ahead): rows that are not fixations, fixations without a
    position and fixations outside the photo. Fixations on the photo but off the aligned face are kept (they
    are gaze on the photo) and counted.
    """
    checked = check_file(session, data=data, options=options, user=user, digest=digest)
    rows = prepare(checked)
    return land(session, checked=checked, rows=rows, filename=filename, options=options, user=user, ip=ip,
                study_id=study_id)
