"""The stored attribution maps' public seam: find or create a map's row, store a computed map, read one back.

A map is one ``explanations`` row (unique per case, model version, method, target, parameters, objective,
subject and mode: the results cache) plus a float32 112x112 ``.npy`` file in the case's folder. The explain
job and the cohort job both store their maps here, so a map computed for a cohort is the case page's map too.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.db import utcnow
from app.explain.fast import EXACT
from app.explain.registry import METHODS
from app.explanations.models import Explanation
from app.jobs.models import DONE, QUEUED
from app.jobs.registry import WorkerContext

MAP_SHAPE = (112, 112)


def params_key(params: Mapping[str, Any]) -> str:
    """A stable digest of canonical (defaults-merged) parameters: part of the cache key."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class MapKey:
    """What makes a map the same map (the table's unique key, with the parameters in full)."""

    case_id: str
    model_id: str
    model_version: str
    method: str
    target_id: str
    params: dict[str, Any] = field(default_factory=dict)
    objective: str = "logit"
    subject: str = ""
    mode: str = EXACT


def find_map(session: Session, key: MapKey) -> Explanation | None:
    return session.scalar(select(Explanation).where(
        Explanation.case_id == key.case_id, Explanation.model_id == key.model_id,
        Explanation.model_version == key.model_version, Explanation.method == key.method,
        Explanation.target_id == key.target_id, Explanation.params_key == params_key(key.params),
        Explanation.objective == key.objective, Explanation.subject == key.subject, Explanation.mode == key.mode))


def find_or_create_map(session: Session, key: MapKey, *, requested_by: int | None, target_index: int,
                       target_name: str) -> tuple[Explanation, bool]:
    """The stored row of this map, or a new queued one (added, not flushed); True when it is new."""
    row = find_map(session, key)
    if row is not None:
        return row, False
    row = Explanation(case_id=key.case_id, requested_by=requested_by, model_id=key.model_id,
                      model_version=key.model_version, method=key.method, target_id=key.target_id,
                      target_index=target_index, target_name=target_name[:200], params=key.params,
                      params_key=params_key(key.params), objective=key.objective, subject=key.subject,
                      mode=key.mode, state=QUEUED)
    session.add(row)
    return row, True


def map_stats(values: np.ndarray, *, signed: bool) -> dict[str, float]:
    """Summary numbers kept with the row; ``vmin``/``vmax`` are the display scale the colour bar shows."""
    from app.explain.render import map_scale

    magnitude = np.abs(values)
    scale = map_scale(values, signed=signed)
    return {
        "vmin": float(scale.vmin),
        "vmax": float(scale.vmax),
        "min": float(values.min()),
        "max": float(values.max()),
        "sum": float(values.sum(dtype=np.float64)),
        "abs_p99": float(np.percentile(magnitude, 99)),
    }


def npy_bytes(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(values, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def read_map(data: bytes) -> np.ndarray:
    """A stored map's array; refuses anything but float32 112x112 (never unpickles)."""
    values = np.load(io.BytesIO(data), allow_pickle=False)
    if values.dtype != np.float32 or values.shape != MAP_SHAPE:
        raise ValueError(f"stored map has dtype {values.dtype} and shape {values.shape}")
    return values


def store_map(context: WorkerContext, case_id: str, row_id: str, values: np.ndarray, elapsed_ms: float,
              objective_value: float | None = None, extra: dict[str, float] | None = None) -> None:
    """Write a computed map's file and mark its row done, unless the case was erased while the job ran (then
    nothing stays behind: a file written in the race is taken back out)."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape != MAP_SHAPE or not np.isfinite(values).all():
        raise RuntimeError(f"explainer returned a map of shape {values.shape} with non-finite values")
    try:
        with context.sessions() as session:
            row = session.get(Explanation, row_id)
            if row is None or session.get(Case, case_id) is None:
                return  # the case was erased while the job ran: write nothing
            row.map_path = context.photo_store.write(case_id, f"maps/{row_id}.npy", npy_bytes(values))
            row.stats = map_stats(values, signed=METHODS[row.method].signed)
            if objective_value is not None:  # the similarity the map explains (shown beside the faces)
                row.stats["objective_value"] = objective_value
            row.stats.update(extra or {})
            row.duration_ms = round(elapsed_ms, 1)
            row.state, row.error, row.finished_at = DONE, None, utcnow()
            session.commit()
    finally:
        with context.sessions() as session:  # erased between the check and the commit: take the file back out
            if session.get(Case, case_id) is None:
                context.photo_store.remove_case(case_id)
