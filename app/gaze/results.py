"""Gaze results: every method's maps against every group's gaze (per case and pooled, with 95 % bootstrap
intervals), group against group, and the leave-one-participant-out ceiling; and the CSV of every number.

σ per case: the default viewing geometry (1° at 60 cm on a 96 dpi screen, see app/evaluate/gaze_maps.py)
carried into aligned pixels by how large the photo was shown (the stimulus rectangle of the case's first
screen-space import; photo-pixel and normalised imports count as shown at native size) and the case's
alignment scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.evaluate import gaze_maps
from app.evaluate.gaze import ALL_METRICS, HIGHER_IS_BETTER
from app.evaluate.gaze_maps import GazeTable, ViewingGeometry, matrix_scale
from app.explain.fast import EXACT
from app.explain.registry import METHODS
from app.explanations.models import Explanation
from app.explanations.service import read_map
from app.gaze.models import Fixation, GazeImport, Participant
from app.jobs.models import DONE
from app.studies.export import csv_cell, csv_table

METRIC_LABELS = {"nss": "NSS", "auc_judd": "AUC-Judd", "auc_borji": "AUC-Borji", "auc_shuffled": "sAUC",
                 "cc": "CC", "sim": "SIM", "kl": "KL", "top_iou": "IoU top-q%"}


@dataclass
class Selection:
    """Which fixations count: all of them, or one study's (browser attention), or only tracker imports."""

    study_id: str | None = None
    angle_deg: float = 1.0
    q: float = 10.0


def gaze_table(session: Session, *, selection: Selection) -> tuple[GazeTable, dict[str, Case]]:
    query = (select(Fixation.aligned_x, Fixation.aligned_y, Fixation.duration_ms, Fixation.case_id,
                    Participant.code, Participant.group, GazeImport.report, GazeImport.study_id)
             .join(Participant, Participant.id == Fixation.participant_id)
             .join(GazeImport, GazeImport.id == Fixation.import_id)
             .order_by(Fixation.id))
    if selection.study_id is not None:
        query = query.where(GazeImport.study_id == selection.study_id)
    rows = session.execute(query).all()
    case_ids = sorted({r.case_id for r in rows})
    cases = {c.id: c for c in session.scalars(select(Case).where(Case.id.in_(case_ids)))}
    shown: dict[str, float] = {}
    for r in rows:
        scale = ((r.report or {}).get("shown_scale") or {}).get(r.case_id)
        if r.case_id not in shown and scale:
            shown[r.case_id] = float(scale)
    geometry = ViewingGeometry(angle_deg=selection.angle_deg)
    sigma = {cid: ViewingGeometry(angle_deg=geometry.angle_deg, screen_px_per_photo_px=shown.get(cid, 1.0))
             .sigma_aligned_px(matrix_scale(cases[cid].align_matrix)) for cid in cases}
    table = GazeTable([r.code for r in rows], [r.group for r in rows], [r.case_id for r in rows],
                      [r.aligned_x for r in rows], [r.aligned_y for r in rows], [r.duration_ms for r in rows],
                      sigma=sigma)
    return table, cases


def method_maps(session: Session, *, store: PhotoStore, case_ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """method → case → the newest computed *exact* map of that case (target and model as they were asked for).

    Fast-mode maps (app.explain.fast) are approximations; a research comparison must not mix them in silently."""
    rows = session.scalars(select(Explanation).where(Explanation.case_id.in_(case_ids), Explanation.state == DONE,
                                                     Explanation.mode == EXACT)
                           .order_by(Explanation.created_at))
    out: dict[str, dict[str, np.ndarray]] = {}
    for row in rows:
        if getattr(row, "objective", "logit") != "logit" or not row.map_path:
            continue
        try:
            out.setdefault(row.method, {})[row.case_id] = read_map(store.read(row.map_path))
        except (OSError, ValueError):
            continue
    return dict(sorted(out.items(), key=lambda kv: list(METHODS).index(kv[0]) if kv[0] in METHODS else 99))


def _clean(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _pooled(scores: gaze_maps.CaseScores) -> dict[str, dict[str, Any]]:
    return {m: {k: _clean(v) if isinstance(v, float) else v for k, v in e.to_dict().items()}
            for m, e in gaze_maps.pooled(scores).items()}


def compute(session: Session, *, store: PhotoStore, selection: Selection) -> dict[str, Any]:
    """Everything the results page and the CSV show, as JSON-ready data."""
    table, cases = gaze_table(session, selection=selection)
    groups = table.groups()
    maps = method_maps(session, store=store, case_ids=list(cases))
    per_case: list[dict[str, Any]] = []

    def keep(kind: str, subject: str, group: str, scores: gaze_maps.CaseScores) -> dict[str, Any]:
        for case_id, values in scores.items():
            per_case.append({"kind": kind, "subject": subject, "group": group, "case": case_id,
                             **{m: _clean(values[m]) for m in ALL_METRICS}})
        return {"cases": len(scores), "metrics": _pooled(scores)}

    methods = {}
    for method, per in maps.items():
        methods[method] = {"label": METHODS[method].label if method in METHODS else method,
                           "groups": {g or "all": keep("method", method, g or "all",
                                                       gaze_maps.map_vs_gaze(table, per, group=g))
                                      for g in [None, *groups]}}
    ceilings = {g or "all": keep("ceiling", "other participants", g or "all", gaze_maps.ceiling(table, group=g))
                for g in [None, *groups]}
    between = {f"{a}|{b}": keep("group", b, a, gaze_maps.group_vs_group(table, a, b))
               for a in groups for b in groups if a != b}
    people = {}
    for code, group in sorted(set(zip(table.participant.tolist(), table.group.tolist(), strict=True))):
        people[code] = {"group": group, "fixations": int((table.participant == code).sum())}
    return {
        "metrics": [{"id": m, "label": METRIC_LABELS[m], "higher_is_better": HIGHER_IS_BETTER[m]}
                    for m in ALL_METRICS],
        "q": selection.q, "angle_deg": selection.angle_deg, "study_id": selection.study_id,
        "groups": groups, "participants": people, "cases": len(cases), "fixations": len(table.case),
        "methods": methods, "ceiling": ceilings, "group_vs_group": between, "per_case": per_case,
        "sigma_px": {cid: round(s, 3) for cid, s in table.sigma.items()},
    }


CSV_COLUMNS = ("scope", "kind", "subject", "group", "case", "metric", "value", "ci_low", "ci_high", "n")


def results_csv(result: dict[str, Any]) -> str:
    """Every number of the results, long format: pooled rows (with intervals) and per-case rows."""
    rows: list[list[Any]] = []

    def pooled_rows(kind: str, subject: str, group: str, block: dict[str, Any]) -> None:
        for metric, e in block["metrics"].items():
            rows.append(["pooled", kind, csv_cell(subject), csv_cell(group), "", metric, _blank(e["mean"]),
                         _blank(e["low"]), _blank(e["high"]), e["n"]])

    for method, entry in result["methods"].items():
        for group, block in entry["groups"].items():
            pooled_rows("method", method, group, block)
    for group, block in result["ceiling"].items():
        pooled_rows("ceiling", "other participants", group, block)
    for pair, block in result["group_vs_group"].items():
        reference, other = pair.split("|")
        pooled_rows("group", other, reference, block)
    for row in result["per_case"]:
        for metric in ALL_METRICS:
            rows.append(["case", row["kind"], csv_cell(row["subject"]), csv_cell(row["group"]), row["case"], metric,
                         _blank(row[metric]), "", "", 1])
    return csv_table(CSV_COLUMNS, rows)


def _blank(value: float | None) -> str | float:
    return "" if value is None else value


FIXATION_COLUMNS = ("import", "format", "study", "participant", "group", "case", "seq", "photo_x", "photo_y",
                    "aligned_x", "aligned_y", "duration_ms", "onset_ms")


def fixations_csv(session: Session, *, study_id: str | None = None) -> str:
    query = (select(Fixation, Participant.code, Participant.group, GazeImport.format, GazeImport.study_id)
             .join(Participant, Participant.id == Fixation.participant_id)
             .join(GazeImport, GazeImport.id == Fixation.import_id)
             .order_by(Fixation.import_id, Fixation.id))
    if study_id is not None:
        query = query.where(GazeImport.study_id == study_id)
    return csv_table(FIXATION_COLUMNS, ([
        f.import_id, fmt, sid or "", csv_cell(code), csv_cell(group), f.case_id, f.seq, round(f.photo_x, 3),
        round(f.photo_y, 3), round(f.aligned_x, 3), round(f.aligned_y, 3), round(f.duration_ms, 3),
        "" if f.onset_ms is None else round(f.onset_ms, 3)] for f, code, group, fmt, sid in session.execute(query)))
