"""What the syndrome page draws from a cohort result: one row per method (its mean map, its agreement map where
the method has a sign to agree on, and the composite's own map), each map with its colour scale's numbers and the
words for its ends; and, while the result is computed, the job's progress and an estimate of the time left.

An agreement map is the share of cases whose map has the mean's sign at each pixel: a magnitude map is never
negative, so its agreement is 1 everywhere and tells nothing (issue 24.5) — such methods get none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from app.cohorts import service
from app.db import utcnow
from app.explain import render as map_render
from app.explain.registry import METHODS
from app.jobs.models import Job

KINDS = (("mean", "syndrome-wise mean map"), ("agreement", "agreement in sign"), ("composite", "map of the composite"))


def _scale(path: Path, *, signed: bool) -> tuple[float, float] | None:
    if not path.is_file():
        return None
    scale = map_render.map_scale(np.load(path, allow_pickle=False), signed=signed)
    return float(scale.vmin), float(scale.vmax)


def method_rows(data_dir: Path, result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method of a finished result, in the result's order."""
    folder = service.result_dir(data_dir, result["id"])
    rows = []
    for method in result["methods"]:
        info = result["result"]["methods"].get(method, {})
        signed = bool(info.get("signed", METHODS[method].signed))
        cards = []
        for kind, what in KINDS:
            if kind == "agreement" and not signed:
                continue
            card_signed = signed and kind != "agreement"
            scale = _scale(folder / f"{method}.{kind}.npy", signed=card_signed)
            low, high = ("against", "for") if card_signed else (("less", "more agree") if kind == "agreement"
                                                                 else ("low", "high"))
            cards.append({"kind": kind, "what": what, "url": result["urls"]["maps"][method][kind],
                          "npy": f"/api/v1/cohorts/{result['id']}/maps/{method}.npy?kind={kind}",
                          "signed": card_signed, "vmin": scale[0] if scale else None,
                          "vmax": scale[1] if scale else None, "low": low, "high": high,
                          "colorbar": f"/api/v1/colorbars/{'signed' if card_signed else 'magnitude'}.png"})
        rows.append({"method": method, "label": METHODS[method].label, "signed": signed, "n": info.get("n"),
                     "agreement_mean": info.get("agreement_mean"), "cards": cards})
    return rows


def progress(db: Session, result: dict[str, Any]) -> dict[str, Any]:
    """The job's state, its progress (0..1) and seconds left, extrapolated once a little progress is made."""
    job = db.get(Job, result["job_id"]) if result.get("job_id") else None
    out: dict[str, Any] = {"state": job.state if job else result["status"], "fraction": 0.0, "seconds_left": None}
    if job is None:
        return out
    out["fraction"] = float(job.progress or 0.0)
    if job.state == "running" and job.started_at is not None and 0.05 <= out["fraction"] < 1.0:
        elapsed = (utcnow() - job.started_at).total_seconds()
        out["seconds_left"] = max(1, round(elapsed * (1.0 - out["fraction"]) / out["fraction"]))
    return out
