"""Synthetic fixation files in every supported format — SYNTHETIC data, for tests and the demo.

No vendor sample file is needed or shipped: the files are written here, in the layouts the parsers document
(app/gaze/parsers.py), from fixations drawn around facial landmarks. Clinical geneticists are simulated as
looking at the eyes, nose, philtrum and mouth; non-clinicians mostly at the eyes, with more scatter. Nothing
here is a finding about real observers.

Deterministic for a seed. Works on plain dataclasses (no database), so the CLI writes files for the cases of
a database and tests write them for cases they made.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass

import numpy as np

from app.gaze.models import CLINICAL_GENETICIST, NON_CLINICIAN, OTHER_CLINICIAN

# Aligned-crop (112 px) points people look at, with weights per group.
TARGETS = {"eyes_l": (38.3, 51.7), "eyes_r": (73.5, 51.5), "nose": (56.0, 71.7), "philtrum": (56.0, 82.0),
           "mouth": (56.1, 92.3), "forehead": (56.0, 25.0), "ear_l": (8.0, 60.0)}
WEIGHTS = {
    CLINICAL_GENETICIST: {"eyes_l": 3, "eyes_r": 3, "nose": 2, "philtrum": 2, "mouth": 2, "forehead": 1, "ear_l": 1},
    OTHER_CLINICIAN: {"eyes_l": 4, "eyes_r": 4, "nose": 2, "philtrum": 1, "mouth": 2, "forehead": 1, "ear_l": 0},
    NON_CLINICIAN: {"eyes_l": 5, "eyes_r": 5, "nose": 2, "philtrum": 0, "mouth": 1, "forehead": 1, "ear_l": 0},
}
SCREEN = (1920, 1080)


@dataclass(frozen=True)
class SynthCase:
    id: str
    pseudonym: str | None
    photo_width: int
    photo_height: int
    align_matrix: list[list[float]]  # photo → aligned

    @property
    def name(self) -> str:
        return self.pseudonym or self.id

    def rect(self) -> tuple[float, float, float, float]:
        """Where the photo is shown: centred, 960 px high (or the screen's width)."""
        scale = min(960 / self.photo_height, (SCREEN[0] - 100) / self.photo_width)
        width, height = self.photo_width * scale, self.photo_height * scale
        return (SCREEN[0] - width) / 2, (SCREEN[1] - height) / 2, width, height


@dataclass(frozen=True)
class SynthFixation:
    participant: str
    case: SynthCase
    x: float  # photo px
    y: float
    duration_ms: float
    onset_ms: float


def _inverse(matrix: list[list[float]]) -> np.ndarray:
    m = np.vstack([np.asarray(matrix, dtype=np.float64), [0, 0, 1]])
    return np.linalg.inv(m)[:2]


def draw(cases: list[SynthCase], participants: list[tuple[str, str]], *, per_case: int = 12,
         seed: int = 0) -> list[SynthFixation]:
    """``per_case`` fixations per (participant, case); ``participants`` are (code, group)."""
    rng = np.random.default_rng(seed)
    out = []
    for code, group in participants:
        weights = WEIGHTS.get(group, WEIGHTS[OTHER_CLINICIAN])
        names = [n for n in TARGETS if weights[n] > 0]
        p = np.array([weights[n] for n in names], dtype=np.float64)
        spread = 4.0 if group == CLINICAL_GENETICIST else 7.0
        for case in cases:
            inverse = _inverse(case.align_matrix)
            onset = float(rng.uniform(50, 250))
            for _ in range(per_case):
                tx, ty = TARGETS[names[rng.choice(len(names), p=p / p.sum())]]
                ax, ay = rng.normal(tx, spread), rng.normal(ty, spread)
                px, py = inverse @ np.array([ax, ay, 1.0])
                duration = float(np.clip(rng.gamma(4.0, 60.0), 80, 1200))
                out.append(SynthFixation(code, case, float(px), float(py), round(duration, 1), round(onset, 1)))
                onset += duration + float(rng.uniform(20, 60))  # a saccade
    return out


def _write(rows: list[list[object]], delimiter: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode()


def generic_csv(fixations: list[SynthFixation]) -> bytes:
    rows: list[list[object]] = [["participant", "case", "x", "y", "duration_ms", "onset_ms"]]
    rows += [[f.participant, f.case.name, round(f.x, 2), round(f.y, 2), f.duration_ms, f.onset_ms] for f in fixations]
    return _write(rows, ",")


def _screen(f: SynthFixation, rect: tuple[float, float, float, float] | None = None) -> tuple[float, float]:
    left, top, width, height = rect or f.case.rect()
    return left + f.x * width / f.case.photo_width, top + f.y * height / f.case.photo_height


def tobii_tsv(fixations: list[SynthFixation], *, sample_ms: float = 8.33) -> bytes:
    """A Pro Lab data export: one row per 120 Hz gaze sample, fixation rows repeated over their samples, a
    saccade row between fixations, media position and size on every row, timestamps in µs."""
    header = ["Recording timestamp [μs]", "Participant name", "Recording name", "Presented Stimulus name",
              "Presented Media position X (DACSpx)", "Presented Media position Y (DACSpx)",
              "Presented Media width (px)", "Presented Media height (px)", "Eye movement type",
              "Gaze event duration [ms]", "Eye movement type index", "Fixation point X [DACS px]",
              "Fixation point Y [DACS px]"]
    rows: list[list[object]] = [header]
    index: dict[str, int] = {}
    for f in fixations:
        rect = tuple(float(round(v)) for v in f.case.rect())  # the export writes whole pixels
        sx, sy = _screen(f, rect)  # type: ignore[arg-type]
        index[f.participant] = index.get(f.participant, 0) + 1
        media = [f"{v:.0f}" for v in rect]
        stimulus = f"case-{f.case.name}.png"
        for k in range(max(1, int(f.duration_ms // sample_ms))):
            t = (f.onset_ms + k * sample_ms) * 1000
            rows.append([f"{t:.0f}", f.participant, f"{f.participant}-rec1", stimulus, *media, "Fixation",
                         f"{f.duration_ms:.0f}", index[f.participant], f"{sx:.0f}", f"{sy:.0f}"])
        rows.append([f"{(f.onset_ms + f.duration_ms) * 1000:.0f}", f.participant, f"{f.participant}-rec1", stimulus,
                     *media, "Saccade", "30", index[f.participant], "", ""])
    return _write(rows, "\t")


def eyelink_report(fixations: list[SynthFixation]) -> bytes:
    """A Data Viewer fixation report (tab-separated; '.' for missing values); positions in display pixels of
    a photo drawn at each case's ``rect()``, so all cases must share one rectangle to import with one option:
    the generator uses the first case's."""
    header = ["RECORDING_SESSION_LABEL", "TRIAL_INDEX", "CURRENT_FIX_INDEX", "CURRENT_FIX_X", "CURRENT_FIX_Y",
              "CURRENT_FIX_DURATION", "CURRENT_FIX_START", "CURRENT_FIX_PUPIL", "image"]
    rows: list[list[object]] = [header]
    trials: dict[tuple[str, str], int] = {}
    counts: dict[tuple[str, str], int] = {}
    for f in fixations:
        key = (f.participant, f.case.id)
        trials.setdefault(key, len([k for k in trials if k[0] == f.participant]) + 1)
        counts[key] = counts.get(key, 0) + 1
        sx, sy = _screen(f)
        rows.append([f.participant, trials[key], counts[key], f"{sx:.1f}", f"{sy:.1f}", f"{f.duration_ms:.0f}",
                     f"{f.onset_ms:.0f}", ".", f"case-{f.case.name}.png"])
    return _write(rows, "\t")


def pupil_surface_csv(fixations: list[SynthFixation], *, frame_ms: float = 33.3) -> bytes:
    """A Pupil Player ``fixations_on_surface_<photo>.csv`` for one (participant, case): one row per world frame
    a fixation overlaps; surface-normalised positions with the origin at the bottom-left."""
    header = ["world_timestamp", "world_index", "fixation_id", "start_timestamp", "duration", "dispersion",
              "norm_pos_x", "norm_pos_y", "x_scaled", "y_scaled", "on_surf"]
    rows: list[list[object]] = [header]
    frame = 0
    for number, f in enumerate(fixations, start=1):
        nx, ny = f.x / f.case.photo_width, 1.0 - f.y / f.case.photo_height
        for k in range(max(1, int(f.duration_ms // frame_ms))):
            frame += 1
            start = f.onset_ms / 1000 + 1000.0
            rows.append([f"{start + k * frame_ms / 1000:.4f}", frame, number, f"{start:.4f}", f"{f.duration_ms:.1f}",
                         "1.2", f"{nx:.5f}", f"{ny:.5f}", f"{nx * 30:.3f}", f"{ny * 40:.3f}", "True"])
    return _write(rows, ",")


def write_all(cases: list[SynthCase], participants: list[tuple[str, str]], *, per_case: int = 12,
              seed: int = 0) -> dict[str, bytes]:
    """Every format, named as the vendors name their files: the generic CSV and the Tobii TSV hold everyone;
    the EyeLink report holds everyone on the first case's screen rectangle; Pupil files are one per
    (participant, case), in a folder named by the case's id: never by its pseudonym, which a clinician typed
    and which may say "../../elsewhere". Different seeds per format, so the four files are four imports."""
    out = {"gaze_generic.csv": generic_csv(draw(cases, participants, per_case=per_case, seed=seed)),
           "tobii_pro_lab_export.tsv": tobii_tsv(draw(cases, participants, per_case=per_case, seed=seed + 1))}
    same_rect = [SynthCase(c.id, c.pseudonym, c.photo_width, c.photo_height, c.align_matrix) for c in cases
                 if c.rect() == cases[0].rect()]
    out["eyelink_fixation_report.txt"] = eyelink_report(draw(same_rect, participants, per_case=per_case,
                                                             seed=seed + 2))
    for code, group in participants:
        for case in cases:
            salt = zlib.crc32(f"{code}:{case.id}".encode()) % 1000
            fix = draw([case], [(code, group)], per_case=per_case, seed=seed + 3 + salt)
            out[f"pupil/{code}/{case.id}/fixations_on_surface_photo.csv"] = pupil_surface_csv(fix)
    return out
