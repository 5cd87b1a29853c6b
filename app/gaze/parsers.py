"""Fixation files from eye trackers, read into one shape (no database: the importer maps them onto cases).

Formats, with the vendors' documentation they follow:

* ``generic`` — our documented CSV: ``participant,case,x,y,duration_ms[,onset_ms]``; ``case`` is a case id or
  pseudonym; coordinates in photo pixels, or in screen pixels when a stimulus rectangle is given.
* ``tobii`` — Tobii Pro Lab "Data Export" as a single TSV (Pro Lab user manual, section "Data export", metrics
  "Eye movement type", "Eye movement type index", "Gaze event duration", "Fixation point X/Y" in display-area
  pixels (DACS px), "Presented Stimulus name", "Presented Media position X/Y (DACS px)", "Presented Media
  width/height (px)"). The export has one row per gaze *sample*: a fixation repeats on every sample it spans,
  so rows are folded by (participant, recording, eye movement type index). Newer versions add unit suffixes
  ("Fixation point X [DACS px]"); headers are compared without them. A comma decimal separator (regional
  export setting) is accepted.
* ``eyelink`` — SR Research Data Viewer "Fixation Report" (Data Viewer user manual, "Fixation Report"
  variables): tab-separated, ``RECORDING_SESSION_LABEL`` (the session, i.e. participant), ``TRIAL_INDEX``,
  ``CURRENT_FIX_INDEX``, ``CURRENT_FIX_X``/``_Y`` (display pixels), ``CURRENT_FIX_DURATION`` (ms),
  ``CURRENT_FIX_START`` (ms from trial start), plus the experiment's trial variables, one of which names
  the image (``image`` unless told otherwise). Missing values are written as ``.``.
* ``pupil`` — Pupil Labs Pupil Player surface tracker export ``fixations_on_surface_<name>.csv`` (Pupil Core
  docs, "Surface Tracker", export format): ``fixation_id``, ``start_timestamp`` (s), ``duration`` (ms),
  ``norm_pos_x``/``norm_pos_y`` (surface-normalised, origin at the surface's *bottom-left*), ``on_surf``.
  The export has one row per world frame a fixation overlaps, so rows are folded by ``fixation_id``. The
  file names neither participant nor photo: the surface is the shown photo, and both are given on import.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from dataclasses import dataclass, field

FORMATS = ("generic", "tobii", "eyelink", "pupil")
PHOTO, SCREEN, NORMALISED = "photo", "screen", "normalised"

Rect = tuple[float, float, float, float]  # left, top, width, height in screen pixels

#: Bounds of a possible value. A fixation file is refused, not "cleaned", when a row lies outside them: a
#: duration of 1e308 ms or a NaN onset is a broken export, and averaging it in would poison every result.
MAX_COORD = 1_000_000.0  # pixels, photo or screen (no display or photo is a million pixels wide)
MAX_DURATION_MS = 60_000.0  # a fixation longer than a minute is not a fixation
MAX_ONSET_MS = 1e12  # about 30 years: any recording clock, never an overflow
LINE = " line"  # key of a row's line number in the file (no header key starts with a space)


class ParseError(Exception):
    """The file cannot be read as the format at all (nothing is imported)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass
class RawFixation:
    participant: str
    stimulus: str  # case id, pseudonym or stimulus file name
    x: float
    y: float
    duration_ms: float
    onset_ms: float | None = None
    space: str = PHOTO
    rect: Rect | None = None  # where the photo was on the screen (screen space only)


@dataclass
class Parsed:
    format: str
    rows: int
    fixations: list[RawFixation]
    skipped: Counter[str] = field(default_factory=Counter)  # reason → rows left out
    impossible: dict[str, list[int]] = field(default_factory=dict)  # reason → file lines (the file is refused)

    def refuse(self, reason: str, row: dict[str, str]) -> None:
        self.impossible.setdefault(reason, []).append(int(row.get(LINE, 0)))


def _key(name: str) -> str:
    """Header names compared without case, spaces or unit suffixes: "Fixation point X [DACS px]" → "fixation
    point x"."""
    name = re.sub(r"\s*[\[(][^\])]*[\])]\s*$", "", name.strip().lstrip("\ufeff"))
    return re.sub(r"\s+", " ", name).lower()


def _number(value: str | None) -> float | None:
    """A number from a cell: empty, "." (EyeLink) or NaN → None; a decimal comma is accepted."""
    if value is None:
        return None
    text = value.strip()
    if not text or text in (".", "-", "NA", "NaN", "nan"):
        return None
    try:
        number = float(text.replace(",", ".")) if text.count(",") == 1 and "." not in text else float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _strict_number(value: str | None) -> tuple[float | None, bool]:
    """Our generic CSV's numbers: only an empty cell is missing; "nan", "inf" or an overflow are impossible
    (``(None, True)``), unlike the vendor formats, whose exports write NaN or "." for a missing value."""
    text = (value or "").strip()
    if not text:
        return None, False
    try:
        number = float(text)
    except ValueError:
        return None, False  # not a number at all: the row has no such value (counted as before)
    return (number, False) if math.isfinite(number) else (None, True)


def _table(text: str, delimiter: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        header = next(reader)
        keys = [_key(h) for h in header]
        rows = []
        for row in reader:
            if any(cell.strip() for cell in row):
                rows.append({**dict(zip(keys, row, strict=False)), LINE: str(reader.line_num)})
    except StopIteration:
        raise ParseError("empty_file", "The file is empty.") from None
    except csv.Error as exc:  # a field over csv.field_size_limit(), a NUL, an unclosed quote …
        raise ParseError("malformed_file", f"The file is not readable as delimited text (line {reader.line_num}: "
                         f"{exc}).") from None
    return keys, rows


def _check(out: Parsed, row: dict[str, str], fix: RawFixation) -> None:
    """Keep ``fix`` when every value is possible; otherwise note the row (the whole file will be refused)."""
    values = [fix.x, fix.y, fix.duration_ms] + ([fix.onset_ms] if fix.onset_ms is not None else [])
    if not all(math.isfinite(v) for v in values) or abs(fix.x) > MAX_COORD or abs(fix.y) > MAX_COORD:
        out.refuse("position", row)
    elif not fix.duration_ms <= MAX_DURATION_MS:
        out.refuse("duration", row)
    elif fix.onset_ms is not None and abs(fix.onset_ms) > MAX_ONSET_MS:
        out.refuse("onset", row)
    elif fix.rect is not None and not rect_possible(fix.rect):
        out.refuse("stimulus_rectangle", row)
    else:
        out.fixations.append(fix)


def rect_possible(rect: Rect) -> bool:
    """Finite, within a million pixels, and with a positive width and height (a 0-wide photo divides by 0)."""
    left, top, width, height = rect
    return (all(math.isfinite(v) for v in rect) and abs(left) <= MAX_COORD and abs(top) <= MAX_COORD
            and 0 < width <= MAX_COORD and 0 < height <= MAX_COORD)


def _require(keys: list[str], needed: list[str], fmt: str) -> None:
    missing = [n for n in needed if n not in keys]
    if missing:
        raise ParseError("unknown_columns", f"Not a {fmt} file: missing column(s) {', '.join(missing)}. "
                         f"Found: {', '.join(keys[:30])}.")


def detect(text: str) -> str:
    """The format from the header line; ``unknown_format`` when none fits."""
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    keys = {_key(k) for k in re.split(r"[\t,;]", first)}
    if {"current_fix_x", "current_fix_y"} <= keys:
        return "eyelink"
    if {"eye movement type", "fixation point x"} <= keys:
        return "tobii"
    if {"norm_pos_x", "norm_pos_y", "on_surf"} <= keys:
        return "pupil"
    if {"participant", "case", "x", "y", "duration_ms"} <= keys:
        return "generic"
    raise ParseError("unknown_format", "Unknown fixation file format: expected a generic CSV (participant, case, "
                     "x, y, duration_ms), a Tobii Pro Lab TSV export, an EyeLink Data Viewer fixation report or a "
                     "Pupil Labs fixations_on_surface CSV. The header was: " + first[:200])


def parse(text: str, fmt: str | None = None, *, space: str = PHOTO, rect: Rect | None = None,
          participant: str | None = None, stimulus: str | None = None,
          stimulus_column: str = "image") -> Parsed:
    """Read a fixation file. ``rect`` (screen files) says where the photo was shown; ``participant`` and
    ``stimulus`` name them for formats whose files do not (Pupil Labs)."""
    fmt = fmt or detect(text)
    if fmt == "generic":
        return _generic(text, space=space, rect=rect)
    if fmt == "tobii":
        return _tobii(text, rect=rect)
    if fmt == "eyelink":
        return _eyelink(text, rect=rect, stimulus_column=stimulus_column)
    if fmt == "pupil":
        if not participant or not stimulus:
            raise ParseError("missing_option", "A Pupil Labs surface file names neither participant nor photo: give "
                             "both (participant code and case) on import.")
        return _pupil(text, participant=participant, stimulus=stimulus)
    raise ParseError("unknown_format", f"Unknown format {fmt!r}; known: {', '.join(FORMATS)}.")


def _generic(text: str, *, space: str, rect: Rect | None) -> Parsed:
    keys, rows = _table(text, ",")
    _require(keys, ["participant", "case", "x", "y", "duration_ms"], "generic CSV")
    if space == SCREEN and rect is None:
        raise ParseError("missing_option", "Screen coordinates need the stimulus rectangle (left, top, width, height).")
    out = Parsed("generic", len(rows), [])
    for row in rows:
        (x, bad_x), (y, bad_y) = _strict_number(row.get("x")), _strict_number(row.get("y"))
        (duration, bad_duration), (onset, bad_onset) = (_strict_number(row.get("duration_ms")),
                                                         _strict_number(row.get("onset_ms")))
        if bad_x or bad_y or bad_duration or bad_onset:
            out.refuse("position" if bad_x or bad_y else "duration" if bad_duration else "onset", row)
            continue
        if x is None or y is None:
            out.skipped["no_position"] += 1
            continue
        if duration is None or duration < 0:
            out.skipped["bad_duration"] += 1
            continue
        _check(out, row, RawFixation(row["participant"].strip(), row["case"].strip(), x, y, duration, onset, space,
                                     rect if space == SCREEN else None))
    return out


def _tobii(text: str, *, rect: Rect | None) -> Parsed:
    keys, rows = _table(text, "\t")
    _require(keys, ["participant name", "presented stimulus name", "eye movement type", "eye movement type index",
                    "gaze event duration", "fixation point x", "fixation point y"], "Tobii Pro Lab export")
    has_media = {"presented media position x", "presented media position y", "presented media width",
                 "presented media height"} <= set(keys)
    if not has_media and rect is None:
        raise ParseError("missing_option", "This Tobii export has no 'Presented Media position/width/height' columns: "
                         "give the stimulus rectangle (left, top, width, height) on import.")
    out = Parsed("tobii", len(rows), [])
    # "Recording timestamp" is in ms in older Pro Lab exports and in µs where the header says so.
    micro = re.search(r"recording timestamp\s*[\[(]\s*(µs|μs|us)\s*[\])]", text[:4000], re.IGNORECASE) is not None
    seen: set[tuple[str, str, str]] = set()
    for row in rows:
        if row.get("eye movement type", "").strip() != "Fixation":
            out.skipped["not_a_fixation"] += 1
            continue
        key = (row["participant name"], row.get("recording name", ""), row["eye movement type index"])
        if key in seen:
            out.skipped["same_fixation"] += 1
            continue
        x, y = _number(row.get("fixation point x")), _number(row.get("fixation point y"))
        duration = _number(row.get("gaze event duration"))
        stimulus = row.get("presented stimulus name", "").strip()
        if x is None or y is None or not stimulus:
            out.skipped["no_position"] += 1
            continue
        seen.add(key)
        row_rect = rect
        if has_media:
            media = [_number(row.get(k)) for k in ("presented media position x", "presented media position y",
                                                  "presented media width", "presented media height")]
            if all(v is not None for v in media):
                row_rect = (media[0], media[1], media[2], media[3])  # type: ignore[assignment]
        if row_rect is None:
            out.skipped["no_position"] += 1
            continue
        onset = _number(row.get("recording timestamp"))
        onset = onset / 1000.0 if onset is not None and micro else onset
        _check(out, row, RawFixation(row["participant name"].strip(), stimulus, x, y, duration or 0.0, onset,
                                     SCREEN, row_rect))
    return out


def _eyelink(text: str, *, rect: Rect | None, stimulus_column: str) -> Parsed:
    keys, rows = _table(text, "\t")
    column = _key(stimulus_column)
    _require(keys, ["recording_session_label", "current_fix_x", "current_fix_y", "current_fix_duration", column],
             "EyeLink fixation report")
    if rect is None:
        raise ParseError("missing_option", "EyeLink positions are display pixels: give the stimulus rectangle "
                         "(left, top, width, height) the photo was drawn in.")
    out = Parsed("eyelink", len(rows), [])
    for row in rows:
        x, y = _number(row.get("current_fix_x")), _number(row.get("current_fix_y"))
        duration = _number(row.get("current_fix_duration"))
        stimulus = row.get(column, "").strip()
        if x is None or y is None or not stimulus or stimulus == ".":
            out.skipped["no_position"] += 1
            continue
        _check(out, row, RawFixation(row["recording_session_label"].strip(), stimulus, x, y, duration or 0.0,
                                     _number(row.get("current_fix_start")), SCREEN, rect))
    return out


def _pupil(text: str, *, participant: str, stimulus: str) -> Parsed:
    keys, rows = _table(text, ",")
    _require(keys, ["fixation_id", "duration", "norm_pos_x", "norm_pos_y", "on_surf"], "Pupil Labs surface export")
    out = Parsed("pupil", len(rows), [])
    seen: set[str] = set()
    for row in rows:
        fixation = row.get("fixation_id", "").strip()
        if fixation in seen:
            out.skipped["same_fixation"] += 1
            continue
        seen.add(fixation)
        if row.get("on_surf", "").strip().lower() not in ("true", "1"):
            out.skipped["outside_photo"] += 1
            continue
        x, y = _number(row.get("norm_pos_x")), _number(row.get("norm_pos_y"))
        if x is None or y is None:
            out.skipped["no_position"] += 1
            continue
        start = _number(row.get("start_timestamp"))
        # Pupil's surface origin is bottom-left (y up); photo pixels have y down.
        _check(out, row, RawFixation(participant, stimulus, x, 1.0 - y, _number(row.get("duration")) or 0.0,
                                     start * 1000.0 if start is not None else None, NORMALISED))
    return out
