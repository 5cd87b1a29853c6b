"""Participants, import options and the look-ups an import needs (the import itself: :mod:`app.gaze.importer`;
files too large for a request: :mod:`app.gaze.import_jobs`). A file is checked whole, then lands whole (or not
at all).

Service functions take keyword arguments and a session and never commit: routes own the transaction, so a
refused import leaves nothing behind. Refusals carry a report (what was wrong, with counts) rather than a
bare error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.errors import DomainError
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


def import_out(row: GazeImport) -> dict[str, Any]:
    return {"id": row.id, "format": row.format, "filename": row.filename, "fixations": row.fixations,
            "report": row.report, "study_id": row.study_id, "created_at": row.created_at.isoformat()}


def imports(session: Session) -> list[GazeImport]:
    return list(session.scalars(select(GazeImport).order_by(GazeImport.created_at.desc())))


def fixation_counts(session: Session) -> dict[int, int]:
    """participant id → fixations."""
    return {pid: int(n) for pid, n in session.execute(
        select(Fixation.participant_id, func.count()).group_by(Fixation.participant_id))}
