"""Participants and fixation imports: a file is checked whole, then lands whole (or not at all).

Service functions take keyword arguments and a session and never commit: routes own the transaction, so a
refused import leaves nothing behind. Refusals carry a report (what was wrong, with counts) rather than a
bare error.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases.models import Case
from app.errors import DomainError
from app.evaluate.gaze_maps import SIZE, to_aligned
from app.gaze import parsers
from app.gaze.models import STANDARD_GROUPS, Fixation, GazeImport, Participant

MAX_FILE_BYTES = 50 * 1024 * 1024
CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
GROUP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


IMPOSSIBLE = {
    "position": f"a position that is not a number or beyond {parsers.MAX_COORD:,.0f} px",
    "duration": f"a duration that is not a number or over {parsers.MAX_DURATION_MS / 1000:.0f} s",
    "onset": "an onset that is not a finite number of milliseconds",
    "stimulus_rectangle": "a stimulus rectangle without a positive, finite width and height",
}


class GazeError(DomainError):
    """A refused participant or import (422 unless a status is given); the extra ``report=`` (in the JSON
    answer too) says what was found. A subclass so that the import page can show the report of a refusal."""

    @property
    def report(self) -> dict[str, Any] | None:
        return self.extra.get("report")


# --- participants -----------------------------------------------------------------------------------------


def check_code(code: str) -> str:
    """Participant codes are short identifiers (letters, digits, ``_.-``): never a name with spaces."""
    code = (code or "").strip()
    if not CODE_PATTERN.match(code):
        raise GazeError("invalid_participant_code", "A participant code is 1-32 letters, digits, '_', '.' or '-' "
                        "(a code such as P07, never a name).")
    return code


def check_group(group: str) -> str:
    """One of the standard groups, or a lab-defined one (lower-case identifier)."""
    group = (group or "").strip().lower().replace(" ", "_").replace("-", "_")
    if group not in STANDARD_GROUPS and not GROUP_PATTERN.match(group):
        raise GazeError("invalid_group", f"group is one of {', '.join(STANDARD_GROUPS)} or a lab-defined identifier.")
    return group


def add_participant(session: Session, *, code: str, group: str, experience_years: float | None = None,
                    user_id: int | None = None) -> Participant:
    code, group = check_code(code), check_group(group)
    if experience_years is not None and not 0 <= float(experience_years) <= 80:
        raise GazeError("invalid_experience", "experience_years is between 0 and 80.")
    if session.scalar(select(Participant.id).where(Participant.code == code)) is not None:
        raise GazeError("participant_exists", f"Participant {code} exists already.", 409)
    row = Participant(code=code, group=group, experience_years=experience_years, user_id=user_id)
    session.add(row)
    session.flush()
    return row


def participants(session: Session) -> list[Participant]:
    return list(session.scalars(select(Participant).order_by(Participant.code)))


def participant_out(row: Participant, fixations: int = 0) -> dict[str, Any]:
    return {"code": row.code, "group": row.group, "experience_years": row.experience_years,
            "browser": row.user_id is not None, "fixations": fixations}


# --- imports ----------------------------------------------------------------------------------------------


@dataclass
class ImportOptions:
    format: str | None = None  # None: detect from the header
    space: str = parsers.PHOTO  # generic CSV: photo or screen pixels
    rect: parsers.Rect | None = None  # the photo's rectangle on the screen (left, top, width, height)
    participant: str | None = None  # Pupil Labs files name no participant…
    case: str | None = None  # …and no photo
    stimulus_column: str = "image"  # EyeLink: the trial variable naming the image
    group: str | None = None  # participants not yet registered are created in this group

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def parse_rect(text: str | None) -> parsers.Rect | None:
    """"left,top,width,height" in screen pixels (width and height positive)."""
    if text is None or not str(text).strip():
        return None
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not parsers.rect_possible((values[0], values[1], values[2], values[3])):
        raise GazeError("invalid_rect", "The stimulus rectangle is 'left,top,width,height' in screen pixels "
                        f"(width and height positive, every value within {parsers.MAX_COORD:,.0f}).")
    return values[0], values[1], values[2], values[3]


def stimulus_stem(name: str) -> str:
    """A stimulus file name without folders and extension ("C:\\stim\\case-P07.png" → "case-P07")."""
    base = PureWindowsPath(name).name if "\\" in name else PurePosixPath(name).name
    return base.rsplit(".", 1)[0] if "." in base else base


def resolve_cases(session: Session, *, user: User, names: Sequence[str]) -> tuple[dict[str, Case], list[str]]:
    """Stimulus names → cases the user may see: a case id or pseudonym, as given or as a file's stem (also with
    a ``case-``/``case_`` prefix dropped). Returns the matches and the names no case answers to."""
    found: dict[str, Case] = {}
    unknown = []
    for name in names:
        stem = stimulus_stem(name)
        candidates = list(dict.fromkeys([name, stem, re.sub(r"^case[-_]", "", stem)]))
        query = select(Case).where(or_(Case.id.in_(candidates), Case.pseudonym.in_(candidates)))
        if not user.is_admin:
            query = query.where(Case.owner_id == user.id)
        matches = list(session.scalars(query.order_by(Case.created_at)))
        if len({m.id for m in matches}) == 1 or (matches and any(m.id in candidates for m in matches)):
            found[name] = next((m for m in matches if m.id in candidates), matches[0])
        else:
            unknown.append(name if not matches else f"{name} (pseudonym shared by {len(matches)} cases)")
    return found, unknown


def _to_photo(fix: parsers.RawFixation, case: Case) -> tuple[float, float]:
    if fix.space == parsers.NORMALISED:
        return fix.x * case.photo_width, fix.y * case.photo_height
    if fix.space == parsers.SCREEN and fix.rect is not None:
        left, top, width, height = fix.rect
        return (fix.x - left) * case.photo_width / width, (fix.y - top) * case.photo_height / height
    return fix.x, fix.y


def import_fixations(session: Session, *, data: bytes, filename: str, options: ImportOptions, user: User,
                     ip: str | None = None, study_id: str | None = None, digest: str | None = None) -> GazeImport:
    """Check the whole file, then add every fixation in one flush; on any refusal nothing is added.

    Refused: an unreadable file or format, missing columns, unknown cases or participants, a file imported
    before. Counted and dropped (the import goes ahead): rows that are not fixations, fixations without a
    position and fixations outside the photo. Fixations on the photo but off the aligned face are kept (they
    are gaze on the photo) and counted.
    """
    if len(data) > MAX_FILE_BYTES:
        raise GazeError("too_large", f"Fixation files are at most {MAX_FILE_BYTES // 2**20} MiB.", 413)
    sha = digest or hashlib.sha256(data).hexdigest()
    earlier = session.scalar(select(GazeImport).where(GazeImport.sha256 == sha))
    if earlier is not None:
        raise GazeError("duplicate_import", f"This file was imported before ({earlier.filename}, import "
                        f"{earlier.id}, {earlier.fixations} fixations): nothing imported.", 409,
                        report={"duplicate_of": earlier.id})
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    if "\x00" in text:
        raise GazeError("unknown_format", "This is not a text file of fixations: nothing imported.")
    try:
        parsed = parsers.parse(text, options.format, space=options.space, rect=options.rect,
                               participant=options.participant, stimulus=options.case,
                               stimulus_column=options.stimulus_column)
    except parsers.ParseError as exc:
        raise GazeError(exc.code, exc.detail + " Nothing imported.", report={"problem": exc.code}) from exc
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
    known = {p.code: p for p in session.scalars(select(Participant).where(Participant.code.in_(codes)))}
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
    for code in unknown_people:
        known[code] = add_participant(session, code=code, group=options.group or "")
    row = GazeImport(format=parsed.format, filename=filename[:200], sha256=sha, options=options.to_dict(),
                     report={}, fixations=0, study_id=study_id, created_by=user.id)
    session.add(row)
    session.flush()
    dropped: Counter[str] = Counter()
    seq: Counter[tuple[str, str]] = Counter()
    off_face = 0
    shown: dict[str, float] = {}  # case id → screen pixels per photo pixel (screen-space files)
    rows = []
    for fix in parsed.fixations:
        case = cases[fix.stimulus]
        px, py = _to_photo(fix, case)
        if not (0 <= px < case.photo_width and 0 <= py < case.photo_height):
            dropped["outside_photo"] += 1
            continue
        if fix.space == parsers.SCREEN and fix.rect is not None:
            shown.setdefault(case.id, round(fix.rect[2] / case.photo_width, 6))
        ax, ay = to_aligned(case.align_matrix, np.array([px]), np.array([py]))
        off_face += not (0 <= ax[0] < SIZE and 0 <= ay[0] < SIZE)
        key = (fix.participant, case.id)
        seq[key] += 1
        rows.append(Fixation(import_id=row.id, participant_id=known[fix.participant].id, case_id=case.id,
                             seq=seq[key], photo_x=px, photo_y=py, aligned_x=float(ax[0]), aligned_y=float(ay[0]),
                             duration_ms=max(0.0, fix.duration_ms), onset_ms=fix.onset_ms))
    if not rows:
        report["skipped"] = dict(parsed.skipped + dropped)
        raise GazeError("import_refused", "Nothing imported: every fixation lies outside its photo (check the "
                        "stimulus rectangle and coordinate space).", report=report)
    session.add_all(rows)
    report.update(fixations=len(rows), skipped=dict(parsed.skipped + dropped), off_face=off_face,
                  participants=len({r.participant_id for r in rows}), cases=len({r.case_id for r in rows}),
                  new_participants=unknown_people, shown_scale=shown)
    row.fixations = len(rows)
    row.report = report
    session.flush()
    audit.record(session, action="gaze_import", user=user, ip=ip,
                 detail={"import": row.id, "format": parsed.format, "fixations": len(rows)})
    return row


def import_out(row: GazeImport) -> dict[str, Any]:
    return {"id": row.id, "format": row.format, "filename": row.filename, "fixations": row.fixations,
            "report": row.report, "study_id": row.study_id, "created_at": row.created_at.isoformat()}


def imports(session: Session) -> list[GazeImport]:
    return list(session.scalars(select(GazeImport).order_by(GazeImport.created_at.desc())))


def fixation_counts(session: Session) -> dict[int, int]:
    """participant id → fixations."""
    return {pid: int(n) for pid, n in session.execute(
        select(Fixation.participant_id, func.count()).group_by(Fixation.participant_id))}
