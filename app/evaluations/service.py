"""Evaluation runs: ask for one (deduplicated by model version and spec), find the newest, describe it."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.evaluate.command import EvaluationSpec
from app.evaluations.models import Evaluation
from app.jobs import service as job_service
from app.jobs.models import DONE, QUEUED, RUNNING, Job
from app.nets.registry import LoadedModel

#: The Evaluation page's default run: 2 faces per syndrome (the count app.evaluate.face_count chose from the
#: interval width it buys), the standard panel, sanity checks on 4 faces.
DEFAULT_SPEC = EvaluationSpec()


def spec_key(spec: EvaluationSpec) -> str:
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()


def request_evaluation(session: Session, *, user: User, model: LoadedModel, spec: EvaluationSpec,
                       recompute: bool = False) -> tuple[Evaluation, Job | None]:
    """The run of ``spec`` on the served model: an existing pending or finished one unless ``recompute``
    (or it failed, or its job was lost), else a new row with a new job (returned, not yet submitted)."""
    spec = spec.resolved()
    key = spec_key(spec)
    if not recompute:
        existing = session.scalars(select(Evaluation).where(
            Evaluation.model_id == model.card.id, Evaluation.model_version == model.card.version,
            Evaluation.spec_key == key, Evaluation.state.in_((QUEUED, RUNNING, DONE)),
        ).order_by(Evaluation.created_at.desc())).first()
        if existing is not None and (existing.state == DONE or not job_service.is_lost(
                session, session.get(Job, existing.job_id) if existing.job_id else None)):
            return existing, None
    row = Evaluation(model_id=model.card.id, model_version=model.card.version, spec_key=key, spec=spec.to_dict(),
                     requested_by=user.id)
    session.add(row)
    session.flush()
    expected = expected_duration(spec)
    job = job_service.create_job(session, kind="evaluate", payload={"evaluation_id": row.id}, owner=user,
                                 estimated_s=expected["seconds"] if expected else None)
    row.job_id = job.id
    session.flush()
    return row, job


def expected_duration(spec: EvaluationSpec) -> dict[str, Any] | None:
    """The run's expected seconds on the bench's machine when idle, from the bench-fitted cost model (None if
    the bench has not fitted one): what the page says instead of a fixed phrase."""
    from app.evaluate.plan import COST_MODEL, expected_seconds, phase_costs
    from app.evaluate.scorecard import EvaluationOptions, independent_methods

    spec = spec.resolved()
    faces = len(spec.classes or range(8)) * spec.per_class * spec.seeds
    sanity_faces = min(spec.sanity_faces, faces)
    costs = phase_costs(list(spec.methods), n_faces=faces, sanity_faces=sanity_faces if sanity_faces >= 2 else 0,
                        sanity_methods=list(spec.sanity_methods or spec.methods), independent=True,
                        random_logit=True, robustness_samples=spec.robustness_samples,
                        similarity_methods=[m for m in ("gradcam", "saliency", "integrated_gradients")
                                            if m in spec.methods],
                        step_rule="integrated_gradients" in spec.methods and spec.ig_tolerance > 0,
                        independent_methods=independent_methods(list(spec.sanity_methods or spec.methods),
                                                                EvaluationOptions().independent_max_passes))
    seconds = expected_seconds(costs, threads=2)
    if seconds is None:
        return None
    return {"seconds": round(seconds), "machine": COST_MODEL.get("machine", ""), "load": COST_MODEL.get("load")}


def runs_for(session: Session, *, model_id: str, limit: int = 50) -> list[Evaluation]:
    return list(session.scalars(select(Evaluation).where(Evaluation.model_id == model_id)
                                .order_by(Evaluation.created_at.desc()).limit(limit)))


def newest(session: Session, *, model: LoadedModel, spec: EvaluationSpec | None = None,
           states: tuple[str, ...] = (DONE,)) -> Evaluation | None:
    query = select(Evaluation).where(Evaluation.model_id == model.card.id,
                                     Evaluation.model_version == model.card.version, Evaluation.state.in_(states))
    if spec is not None:
        query = query.where(Evaluation.spec_key == spec_key(spec.resolved()))
    return session.scalars(query.order_by(Evaluation.created_at.desc())).first()


def evaluation_out(row: Evaluation, *, result: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id, "model": {"id": row.model_id, "version": row.model_version}, "spec": row.spec,
        "state": row.state, "error": row.error, "job_id": row.job_id,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "urls": {"self": f"/api/v1/evaluations/{row.id}", "page": f"/models/{row.model_id}/evaluation?run={row.id}"},
    }
    if result:
        out["result"] = row.result
    return out
