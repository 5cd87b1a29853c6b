"""Ranking a case with the served model and reading the stored rankings back."""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.nets.predict import PredictionResult, predict
from app.nets.registry import LoadedModel
from app.predictions.models import PredictionRun
from app.predictions.references import References, references_for, run_hooks

TOP_K = 10
__all__ = ["TOP_K", "decode_png", "inference_lock", "latest_run", "rank_crop", "references_for", "result_rows",
           "runs_for_case", "store_run"]

# One forward pass at a time per process: torch already spreads a pass over the cores, and concurrent passes
# on a small machine oversubscribe them (spinning intra-op threads made passes 10-80x slower in the bench).
_INFERENCE_LOCK = threading.Lock()


def inference_lock() -> threading.Lock:
    """The per-process lock every forward pass of the served model takes (see ``_INFERENCE_LOCK``)."""
    return _INFERENCE_LOCK


def rank_crop(model: LoadedModel, crop: np.ndarray, *, top_k: int = TOP_K,
              references: References | None = None) -> PredictionResult:
    """Rank one crop; ``references`` (read beforehand with :func:`references_for`) adds the shared cases."""
    extra = references.gallery if references is not None else None
    syndromes = references.syndromes if references is not None else None
    with _INFERENCE_LOCK:
        return predict(model, crop, top_k=top_k, extra=extra, syndromes=syndromes)


def result_rows(result: PredictionResult) -> list[dict[str, Any]]:
    """The contract's prediction shape: rank, syndrome_id, name, score (softmax, null when the head does not
    know the syndrome), distance, image_id and source (when a gallery or a shared case ranks it)."""
    rows = []
    for p in result.ranked:
        row: dict[str, Any] = {
            "rank": p.rank,
            "syndrome_id": p.syndrome_id,
            "name": p.name,
            "omim": p.omim,
            "score": None if p.score is None else round(float(p.score), 6),
        }
        if p.distance is not None:
            row["distance"] = round(float(p.distance), 6)
            # a shared case's id never leaves through a ranking (it may be another user's case)
            row["image_id"] = p.image_id if p.source != "case" else None
            row["source"] = p.source  # "gallery" image or confirmed "case" shared for matching
        rows.append(row)
    return rows


def store_run(session: Session, *, case: Case, model: LoadedModel, result: PredictionResult) -> PredictionRun:
    run = PredictionRun(
        case_id=case.id,
        model_id=model.card.id,
        model_version=model.card.version,
        ranked_by=result.ranking,
        ranked=result_rows(result),
        out_of_distribution=result.out_of_distribution.to_json() if result.out_of_distribution else None,
    )
    session.add(run)
    session.flush()
    run_hooks(session, case, model, result)
    return run


def decode_png(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("stored crop cannot be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def latest_run(session: Session, *, case_id: str) -> PredictionRun | None:
    query = (
        select(PredictionRun)
        .where(PredictionRun.case_id == case_id)
        .order_by(PredictionRun.created_at.desc(), PredictionRun.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def runs_for_case(session: Session, *, case_id: str) -> list[PredictionRun]:
    query = select(PredictionRun).where(PredictionRun.case_id == case_id).order_by(PredictionRun.id.desc())
    return list(session.scalars(query))


def out_of_range(session: Session, *, case_id: str) -> dict[str, Any] | None:
    """The latest ranking's out-of-range verdict when it flags the face, else None.

    Every place that shows a map or a score of the face (ranking, explanation panel, Compare, rating pages, the
    downloaded figures) shows the warning with it: a map of a face the model cannot read looks as convincing as
    any other (issue 24)."""
    return out_of_range_for(session, case_ids=[case_id]).get(case_id)


def latest_runs(session: Session, *, case_ids: list[str]) -> dict[str, PredictionRun]:
    """Newest run per case for a page of cases, in one query (no N+1 on the case list)."""
    if not case_ids:
        return {}
    rows = session.scalars(
        select(PredictionRun).where(PredictionRun.case_id.in_(case_ids)).order_by(PredictionRun.id.asc())
    )
    return {row.case_id: row for row in rows}


def out_of_range_for(session: Session, *, case_ids: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`out_of_range` for many cases in one query: only the flagged ones are keys. Lists that put a face
    beside others (matches, similar patients, the case list) flag it like the case page does."""
    verdicts = {cid: run.out_of_distribution for cid, run in latest_runs(session, case_ids=case_ids).items()}
    return {cid: v for cid, v in verdicts.items() if v and v.get("flagged")}


def out_of_range_text(verdict: dict[str, Any]) -> str:
    """One sentence for figures and other places without the page's markup."""
    distance, threshold = float(verdict["distance"]), float(verdict["threshold"])
    return (f"OUT OF RANGE: this face is far from every face the model has seen (distance {distance:.1f} to the "
            f"nearest gallery face, threshold {threshold:.1f}); its maps and scores say nothing reliable about it.")
