"""The "explain" job: compute the queued maps of one request, storing each map as soon as it is done.

Runs in a runner (inline thread or Celery worker), never in a request. The worker keeps one
:class:`~app.explain.engine.Explainer` per model version in its context: the explainer holds a private
copy of the network for its hooks, so the model that serves predictions is never touched.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict

import numpy as np
from sqlalchemy import select

from app.cases.models import Case
from app.db import utcnow
from app.explain.engine import Explainer, resolve_device
from app.explain.ensemble import EnsembleExplainer
from app.explain.objectives import Objective
from app.explain.registry import METHODS
from app.explanations.models import Explanation
from app.explanations.service import map_stats, npy_bytes
from app.jobs import service as job_service
from app.jobs.models import DONE, FAILED, QUEUED, RUNNING, Job
from app.jobs.registry import WorkerContext, fail_unfinished, handler
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png


def explainer_for(context: WorkerContext, model: LoadedModel) -> Explainer:
    key = f"explainer:{model.version}"
    explainer = context.cache.get(key)
    if explainer is None:
        explainer = Explainer(model.network, gradcam_layer=model.card.gradcam_layer,
                              device=resolve_device(context.settings.device))
        context.cache[key] = explainer
    return explainer


def ensemble_explainer_for(context: WorkerContext, model: LoadedModel) -> EnsembleExplainer:
    """One private Explainer per member of an ensemble (maps whose params name a ``member``)."""
    key = f"ensemble-explainer:{model.version}"
    explainer = context.cache.get(key)
    if explainer is None:
        explainer = EnsembleExplainer(model.ensemble, gradcam_layer=model.card.gradcam_layer,
                                      device=resolve_device(context.settings.device))
        context.cache[key] = explainer
    return explainer


def _fail_rows(context: WorkerContext, ids: list[str], error: str) -> None:
    with context.sessions() as session:
        for row in session.scalars(select(Explanation).where(Explanation.id.in_(ids),
                                                            Explanation.state.in_((QUEUED, RUNNING)))):
            row.state, row.error, row.finished_at = FAILED, error, utcnow()
        session.commit()


@handler("explain", on_failure=fail_unfinished(Explanation), lane="interactive")
def run_explain(job: Job, context: WorkerContext) -> None:
    with context.sessions() as session:
        rows = list(session.scalars(select(Explanation).where(
            Explanation.id.in_(job.payload.get("explanation_ids", [])),
            Explanation.job_id == job.id,
            Explanation.state.in_((QUEUED, RUNNING)),
        )))
        case = session.get(Case, job.case_id) if job.case_id else None
        if not rows or case is None:
            return  # already computed by a re-delivered copy, or the case was erased meanwhile
        aligned_path = case.aligned_path
        for row in rows:
            row.state = RUNNING
        session.commit()
        work = [(row.id, row.method, row.target_index, row.model_id, row.model_version, dict(row.params))
                for row in rows]
        # what each map explains and which image it is drawn on (similarity maps, issue 9)
        objective_of = {row.id: (row.objective or "logit", row.subject or "", row.mode or "exact") for row in rows}
    ids = [item[0] for item in work]
    try:
        model = context.model()
        wrong = {f"{m}@{v}" for _, _, _, m, v, _ in work if (m, v) != (model.card.id, model.card.version)}
        if wrong:
            raise RuntimeError(f"maps were requested from {', '.join(sorted(wrong))} but this worker serves "
                               f"{model.version}; ask again")
        crop = decode_png(context.photo_store.read(aligned_path))
        explainer = explainer_for(context, model)
        by_target: dict[tuple[int, str, str, str, str | None], list[tuple[str, str, dict]]] = defaultdict(list)
        for row_id, method, target, _, _, params in work:
            member = params.pop("member", None)  # an ensemble's network(s): app.explanations.service.resolve_member
            by_target[(target, *objective_of[row_id], member)].append((row_id, method, params))
        write_progress = job_service.progress_writer(context.sessions, job.id, job.worker)
        done_so_far = 0
        for (target, objective_key, subject, mode, member), items in by_target.items():
            row_of = {method: row_id for row_id, method, _ in items}
            objective, subject_crop, value = objective_and_crop(context, model, crop, target, objective_key, subject)
            checked = _member_model(model, member, objective)  # whose logit completeness is checked against
            offset, share = done_so_far / len(work), len(items) / len(work)
            started = [time.perf_counter()]

            params_of = {method: params for _, method, params in items}

            def store(method: str, values: np.ndarray, row_of: dict[str, str] = row_of,
                      started: list[float] = started, value: float | None = value,
                      objective: Objective = objective, params_of: dict = params_of,
                      subject_crop: np.ndarray = subject_crop, target: int = target,
                      checked: LoadedModel | None = checked) -> None:
                elapsed_ms = (time.perf_counter() - started[0]) * 1000
                extra = {} if checked is None else _completeness(checked, subject_crop, target, objective, method,
                                                                 params_of[method], values)
                started[0] = time.perf_counter()
                _store_map(context, job.case_id or "", row_of[method], values, elapsed_ms, value, extra)

            if member is not None:
                ensemble_explainer_for(context, model).explain(
                    subject_crop, target=target, member=None if member == "mean" else member,
                    methods=[method for _, method, _ in items], params={method: params for _, method, params in items},
                    mode=mode, on_map=store,
                    on_progress=lambda fraction, offset=offset, share=share: write_progress(offset + share * fraction),
                )
                done_so_far += len(items)
                continue
            explainer.explain(
                subject_crop, objective=objective, methods=[method for _, method, _ in items],
                params={method: params for _, method, params in items},
                mode=mode,  # each row's own (effective) mode, app.explain.fast
                on_map=store,
                on_progress=lambda fraction, offset=offset, share=share: write_progress(offset + share * fraction),
            )
            done_so_far += len(items)
    except Exception as exc:
        _fail_rows(context, ids, str(exc) or type(exc).__name__)
        raise
    _fail_rows(context, ids, "the engine returned no map for this method")  # only rows still not done


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


def _store_map(context: WorkerContext, case_id: str, row_id: str, values: np.ndarray, elapsed_ms: float,
               objective_value: float | None = None, extra: dict[str, float] | None = None) -> None:
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (112, 112) or not np.isfinite(values).all():
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
