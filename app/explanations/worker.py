"""The "explain" job: compute the queued maps of one request, storing each map as soon as it is done.

Runs in a runner (inline thread or Celery worker), never in a request. The worker keeps one
:class:`~app.explain.engine.Explainer` per model version in its context: the explainer holds a private
copy of the network for its hooks, so the model that serves predictions is never touched.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select

from app.cases.models import Case
from app.db import utcnow
from app.explain.engine import Explainer, resolve_device
from app.explain.ensemble import EnsembleExplainer
from app.explain.objectives import Objective
from app.explanations.map_store import store_map
from app.explanations.models import Explanation
from app.jobs import lanes
from app.jobs import service as job_service
from app.jobs.models import FAILED, QUEUED, RUNNING, Job
from app.jobs.registry import WorkerContext, fail_unfinished, handler
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png


def _cached(context: WorkerContext, key: str, build: Callable[[], Any]) -> Any:
    """The worker's one copy of ``key`` (explainers hold a private network copy: built once per model version)."""
    if key not in context.cache:
        context.cache[key] = build()
    return context.cache[key]


def explainer_for(context: WorkerContext, model: LoadedModel) -> Explainer:
    return _cached(context, f"explainer:{model.version}", lambda: Explainer(
        model.network, gradcam_layer=model.card.gradcam_layer, device=resolve_device(context.settings.device)))


def ensemble_explainer_for(context: WorkerContext, model: LoadedModel) -> EnsembleExplainer:
    """One private Explainer per member of an ensemble (maps whose params name a ``member``)."""
    return _cached(context, f"ensemble-explainer:{model.version}", lambda: EnsembleExplainer(
        model.ensemble, gradcam_layer=model.card.gradcam_layer, device=resolve_device(context.settings.device)))


def _requeue_rows(context: WorkerContext, ids: list[str]) -> None:
    """The job handed its turn over: its maps not yet done wait in the queue again (the job runs them next time)."""
    with context.sessions() as session:
        for row in session.scalars(select(Explanation).where(Explanation.id.in_(ids), Explanation.state == RUNNING)):
            row.state = QUEUED
        session.commit()


def _fail_rows(context: WorkerContext, ids: list[str], error: str) -> None:
    with context.sessions() as session:
        for row in session.scalars(select(Explanation).where(Explanation.id.in_(ids),
                                                            Explanation.state.in_((QUEUED, RUNNING)))):
            row.state, row.error, row.finished_at = FAILED, error, utcnow()
        session.commit()


@dataclass(frozen=True)
class MapWork:
    """One map the job computes: its row, and what it explains."""

    row_id: str
    method: str
    target: int
    model_tag: tuple[str, str]  # (model id, version) the row was asked of
    params: dict
    objective: str  # "logit" or a similarity key (app.compare.references)
    subject: str  # "" = the case's own crop, "gallery:<image id>" = a gallery face
    mode: str  # "exact" or "fast" (app.explain.fast)

    @property
    def group(self) -> tuple[int, str, str, str, str | None]:
        """Maps of one group share an objective and an image: one explainer call computes them all."""
        return self.target, self.objective, self.subject, self.mode, self.params.get("member")


@dataclass
class MapSink:
    """Receives each map of one group as the explainer finishes it: checks completeness, stores it, times it."""

    context: WorkerContext
    case_id: str
    items: list[MapWork]
    objective: Objective
    subject_crop: np.ndarray
    value: float | None
    checked: LoadedModel | None  # whose logit completeness is checked against (None: the ensemble's mean)
    started: float = field(default_factory=time.perf_counter)

    def __call__(self, method: str, values: np.ndarray) -> None:
        item = next(w for w in self.items if w.method == method)
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        extra = {} if self.checked is None else _completeness(self.checked, self.subject_crop, item.target,
                                                              self.objective, method, _own_params(item), values)
        self.started = time.perf_counter()
        store_map(self.context, self.case_id, item.row_id, values, elapsed_ms, self.value, extra)
        if lanes.turn_over():  # others wait for their first map: this job's remaining maps go back in the queue
            raise lanes.YieldTurn


def _own_params(item: MapWork) -> dict:
    """The method's parameters without ``member`` (the ensemble's network is not a method parameter)."""
    return {k: v for k, v in item.params.items() if k != "member"}


def _claim_rows(job: Job, context: WorkerContext) -> tuple[list[MapWork], str] | None:
    """Mark the job's unfinished rows running; None when there is nothing to do (done by a re-delivered copy,
    or the case was erased meanwhile). Returns the work and the case's aligned crop path."""
    with context.sessions() as session:
        rows = list(session.scalars(select(Explanation).where(
            Explanation.id.in_(job.payload.get("explanation_ids", [])),
            Explanation.job_id == job.id,
            Explanation.state.in_((QUEUED, RUNNING)),
        )))
        case = session.get(Case, job.case_id) if job.case_id else None
        if not rows or case is None:
            return None
        for row in rows:
            row.state = RUNNING
        session.commit()
        work = [MapWork(row.id, row.method, row.target_index, (row.model_id, row.model_version), dict(row.params),
                        row.objective or "logit", row.subject or "", row.mode or "exact") for row in rows]
        return work, case.aligned_path


@handler("explain", on_failure=fail_unfinished(Explanation), lane="interactive")
def run_explain(job: Job, context: WorkerContext) -> None:
    claimed = _claim_rows(job, context)
    if claimed is None:
        return
    work, aligned_path = claimed
    ids = [item.row_id for item in work]
    try:
        _compute(job, context, work, aligned_path)
    except lanes.YieldTurn:
        _requeue_rows(context, ids)
        raise
    except Exception as exc:
        _fail_rows(context, ids, str(exc) or type(exc).__name__)
        raise
    _fail_rows(context, ids, "the engine returned no map for this method")  # only rows still not done


def _compute(job: Job, context: WorkerContext, work: list[MapWork], aligned_path: str) -> None:
    model = context.model()
    wrong = {f"{m}@{v}" for m, v in (item.model_tag for item in work) if (m, v) != (model.card.id, model.card.version)}
    if wrong:
        raise RuntimeError(f"maps were requested from {', '.join(sorted(wrong))} but this worker serves "
                           f"{model.version}; ask again")
    crop = decode_png(context.photo_store.read(aligned_path))
    groups: dict[tuple[int, str, str, str, str | None], list[MapWork]] = defaultdict(list)
    for item in work:
        groups[item.group].append(item)
    write_progress = job_service.progress_writer(context.sessions, job.id, job.worker)
    done_so_far = 0
    for (target, objective_key, subject, mode, member), items in groups.items():
        objective, subject_crop, value = objective_and_crop(context, model, crop, target, objective_key, subject)
        sink = MapSink(context, job.case_id or "", items, objective, subject_crop, value,
                       checked=_member_model(model, member, objective))
        offset, share = done_so_far / len(work), len(items) / len(work)
        methods = [item.method for item in items]
        params = {item.method: _own_params(item) for item in items}

        def on_progress(fraction: float, offset: float = offset, share: float = share) -> None:
            write_progress(offset + share * fraction)

        if member is not None:
            ensemble_explainer_for(context, model).explain(
                subject_crop, target=target, member=None if member == "mean" else member, methods=methods,
                params=params, mode=mode, on_map=sink, on_progress=on_progress)
        else:
            explainer_for(context, model).explain(
                subject_crop, objective=objective, methods=methods, params=params,
                mode=mode,  # each row's own (effective) mode, app.explain.fast
                on_map=sink, on_progress=on_progress)
        done_so_far += len(items)


def _member_model(model: LoadedModel, member: str | None, objective: Objective) -> LoadedModel | None:
    """The model whose network a group of maps explains (None: the ensemble's mean, no single network's logit).

    A ``member`` is only ever stored for a logit map of the case's own crop (the API's rule); anything else
    would explain the wrong objective, so it fails loudly."""
    if member is None:
        return model
    if objective.kind != "logit":
        raise RuntimeError(f"ensemble member {member!r} was stored with a {objective.kind} objective; only logit "
                           "maps choose a member")
    if member == "mean":
        return None
    network = next((m.network for m in model.ensemble if m.name == member), None)
    if network is None:
        raise RuntimeError(f"model {model.version} has no ensemble member {member!r}")
    return dataclasses.replace(model, network=network)


def objective_and_crop(context: WorkerContext, model: LoadedModel, crop: np.ndarray, target: int, objective_key: str,
                       subject: str) -> tuple[Objective, np.ndarray, float | None]:
    """(objective, the crop the maps are drawn on, the objective's value for a similarity) of one group of maps."""
    if subject:
        from app.compare.references import gallery_image

        image = gallery_image(model, subject.removeprefix("gallery:"), context.settings.data_dir / "gallery_renders")
        if image.crop is None:
            raise RuntimeError(image.reason)
        crop = image.crop
    if objective_key == "logit":
        return Objective.logit(target), crop, None
    from app.compare.references import case_embedding, reference_objective

    with context.sessions() as session:
        objective = reference_objective(session, context.photo_store, model, objective_key)
    embedding = case_embedding(model, crop).astype(np.float64)
    assert objective.reference is not None
    return objective, crop, float(embedding @ objective.reference / np.linalg.norm(embedding))


def _completeness(model: LoadedModel, crop: np.ndarray, target: int, objective: Objective, method: str,
                  params: dict, values: np.ndarray) -> dict[str, float]:
    """Integrated gradients and DeepLIFT claim Σ map = f(x) − f(baseline): store how far off this map is
    (issue 10; IG's quadrature error is 1–2 % at 50 steps on PReLU nets). Logit objectives only."""
    if method not in ("integrated_gradients", "deeplift") or objective.kind != "logit":
        return {}
    from app.evaluate.completeness import completeness, objective_change
    from app.explain.engine import prepare_input

    delta = objective_change(model.network, prepare_input(crop), target, float(params.get("baseline", -1.0)))
    result = completeness(values, delta)
    return {"objective_change": result.delta, "completeness_error": result.relative_error}
