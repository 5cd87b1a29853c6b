"""The "cohort" job: per-case maps (stored ones reused), groupwise registration, composite and syndrome-wise maps.

Only missing (case, method, objective) maps are computed — as ordinary exact-mode ``explanations`` rows of their
cases, so they are reused by the case page, later cohorts and erasure alike. For a logit objective the passes of
up to :data:`CASES_PER_BATCH` cases share batches (:func:`app.explain.cohort_batch.explain_cohort`: the same maps as
one case at a time, up to float rounding); a similarity objective runs case by case. The arrays are written to
``<data dir>/cohorts/<result id>/``: ``composite.npy`` / ``plain.npy`` (float32 RGB), and per method
``<method>.mean.npy``, ``<method>.agreement.npy`` and ``<method>.composite.npy`` (the map of the composite face
itself). Progress: maps 80 %, registration and aggregation the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cases.models import Case
from app.cohorts.models import CohortResult
from app.cohorts.service import COHORT_JOB, MIN_PATIENTS, patient_count, result_dir
from app.db import utcnow
from app.explain.cohort_batch import CASES_PER_BATCH, CohortItem, explain_cohort
from app.explain.composite import cohort_maps, register, sharpness
from app.explain.engine import Explainer
from app.explain.fast import EXACT
from app.explain.objectives import Objective
from app.explain.registry import METHODS, normalise_params
from app.explanations.map_store import MapKey, find_or_create_map, read_map, store_map
from app.explanations.models import Explanation
from app.explanations.worker import explainer_for
from app.jobs import service as job_service
from app.jobs.models import DONE, RUNNING, Job
from app.jobs.registry import WorkerContext, fail_unfinished, handler
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png


def _groups(todo: list[tuple[int, tuple[str, ...]]], *, logit: bool) -> list[list[tuple[int, tuple[str, ...]]]]:
    """Consecutive cases that need the same methods, at most CASES_PER_BATCH together (one each for similarity
    objectives, which the engine serves one face at a time)."""
    groups: list[list[tuple[int, tuple[str, ...]]]] = []
    for entry in todo:
        if logit and groups and groups[-1][0][1] == entry[1] and len(groups[-1]) < CASES_PER_BATCH:
            groups[-1].append(entry)
        else:
            groups.append([entry])
    return groups


def _map_row(session: Session, *, case: Case, result: CohortResult, method: str, target_index: int,
             target_name: str, job: Job) -> tuple[Explanation, bool]:
    """The stored row of this (case, method, objective) map, or a new one to compute (True)."""
    key = MapKey(case_id=case.id, model_id=result.model_id, model_version=result.model_version, method=method,
                 target_id=result.syndrome_id, params=normalise_params(method, None), objective=result.objective,
                 subject="", mode=EXACT)
    row, _ = find_or_create_map(session, key, requested_by=result.owner_id, target_index=target_index,
                                target_name=target_name)
    if row.state == DONE and row.map_path:
        return row, False
    row.state, row.error, row.job_id = RUNNING, None, job.id
    return row, True


@dataclass
class CohortWork:
    """What the job works on, read once from the result row (no session is held while computing)."""

    result_id: str
    methods: list[str]
    objective_key: str
    syndrome: str
    cases: list[tuple[str, str]]  # (case id, aligned crop path)


@dataclass
class CaseMaps:
    """Per case of the cohort: its crop, its map rows, the stored maps to reuse and the fresh ones."""

    crops: list[np.ndarray] = field(default_factory=list)
    row_ids: list[dict[str, str]] = field(default_factory=list)
    stored: list[dict[str, str]] = field(default_factory=list)
    fresh: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    todo: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)  # (case index, methods to compute)


@handler(COHORT_JOB, on_failure=fail_unfinished(CohortResult))
def run_cohort(job: Job, context: WorkerContext) -> None:
    model = context.model()
    work = _start(job, context, model)
    if work is None:
        return
    labels = [label.id for label in model.labels]
    target_index = labels.index(work.syndrome)
    objective = _objective(context, model, work.objective_key, target_index)
    explainer = explainer_for(context, model)
    write_progress = job_service.progress_writer(context.sessions, job.id, job.worker)
    maps = _case_maps(job, context, work, target_index, model.labels[target_index].name)
    _compute_missing(context, explainer, objective, work, maps, target_index, write_progress)
    summary = _aggregate(context, explainer, objective, work, maps, write_progress)
    write_progress(1.0)
    with context.sessions() as session:
        row = session.get(CohortResult, work.result_id)
        if row is not None:
            row.result, row.state, row.error, row.finished_at = summary, DONE, None, utcnow()
            session.commit()


def _start(job: Job, context: WorkerContext, model: LoadedModel) -> CohortWork | None:
    """Mark the result running after checking it is still wanted, of this model, and above the floor."""
    with context.sessions() as session:
        result = session.scalar(select(CohortResult).where(CohortResult.id == job.payload.get("cohort_id"),
                                                           CohortResult.job_id == job.id))
        if result is None or result.state == DONE:
            return None
        if (result.model_id, result.model_version) != (model.card.id, model.card.version):
            raise RuntimeError(f"the cohort was asked of {result.model_id}@{result.model_version} but this worker "
                               f"serves {model.version}; ask again")
        cases = [c for c in (session.get(Case, cid) for cid in result.case_ids) if c is not None]
        if len(cases) < len(result.case_ids) or patient_count(cases) < MIN_PATIENTS:
            raise RuntimeError("cases of the cohort were erased meanwhile; ask again")
        result.state = RUNNING
        session.commit()
        return CohortWork(result.id, list(result.methods), result.objective, result.syndrome_id,
                          [(c.id, c.aligned_path) for c in cases])


def _objective(context: WorkerContext, model: LoadedModel, objective_key: str, target_index: int) -> Objective:
    if objective_key == "logit":
        return Objective.logit(target_index)
    from app.compare.references import reference_objective

    with context.sessions() as session:
        return reference_objective(session, context.photo_store, model, objective_key)


def _case_maps(job: Job, context: WorkerContext, work: CohortWork, target_index: int, name: str) -> CaseMaps:
    """Each case's crop and map rows (one short transaction per case): stored exact maps are reused."""
    maps = CaseMaps()
    for i, (case_id, aligned_path) in enumerate(work.cases):
        maps.crops.append(decode_png(context.photo_store.read(aligned_path)))
        with context.sessions() as session:
            case = session.get(Case, case_id)
            if case is None:
                raise RuntimeError("a case of the cohort was erased meanwhile; ask again")
            rows = {m: _map_row(session, case=case, result=session.get(CohortResult, work.result_id), method=m,
                                target_index=target_index, target_name=name, job=job) for m in work.methods}
            session.commit()
            maps.row_ids.append({m: row.id for m, (row, _) in rows.items()})
            maps.stored.append({m: row.map_path for m, (row, new) in rows.items() if not new})
            missing = tuple(m for m, (_, new) in rows.items() if new)
        if missing:
            maps.todo.append((i, missing))
    return maps


def _compute_missing(context: WorkerContext, explainer: Explainer, objective: Objective, work: CohortWork,
                     maps: CaseMaps, target_index: int, write_progress: Callable[[float], None]) -> None:
    """The maps no case had yet, stored as each case's ordinary exact maps. Progress: 0 → 80 %."""
    done_units, pending_cases = [0.0], max(1, len(maps.todo))

    def store(i: int, fresh: dict[str, np.ndarray], elapsed_ms: float) -> None:
        maps.fresh[i] = fresh
        for method, values in fresh.items():
            store_map(context, work.cases[i][0], maps.row_ids[i][method], values, elapsed_ms / len(fresh))

    for group in _groups(maps.todo, logit=objective.kind == "logit"):
        missing = list(group[0][1])
        started = time.perf_counter()
        if objective.kind == "logit":  # passes of several cases share batches (app.explain.cohort_batch)
            items = [CohortItem(maps.crops[i], target_index) for i, _ in group]
            explain_cohort(
                explainer, items, methods=missing,
                on_face=lambda k, fresh, group=group, started=started: store(
                    group[k][0], fresh, (time.perf_counter() - started) * 1000 / (k + 1)),
                on_progress=lambda f, n=len(group): write_progress(0.8 * (done_units[0] + f * n) / pending_cases))
        else:
            i = group[0][0]
            store(i, explainer.explain(maps.crops[i], objective=objective, methods=missing,
                                       on_progress=lambda f: write_progress(0.8 * (done_units[0] + f) / pending_cases)),
                  (time.perf_counter() - started) * 1000)
        done_units[0] += len(group)
        write_progress(0.8 * done_units[0] / pending_cases)


def _aggregate(context: WorkerContext, explainer: Explainer, objective: Objective, work: CohortWork, maps: CaseMaps,
               write_progress: Callable[[float], None]) -> dict[str, object]:
    """Registration, composite, syndrome-wise maps; the arrays go to the result's folder. Progress: 80 → 100 %."""
    per_method: dict[str, list[np.ndarray]] = {m: [] for m in work.methods}
    for i in range(len(work.cases)):
        for method in work.methods:
            values = maps.fresh[i][method] if method in maps.fresh.get(i, {}) else \
                read_map(context.photo_store.read(maps.stored[i][method]))
            per_method[method].append(values)
    write_progress(0.8)
    registration = register(maps.crops, on_progress=lambda f: write_progress(0.8 + 0.1 * f))
    composite_crop = np.clip(np.round(registration.composite), 0, 255).astype(np.uint8)
    composite_maps = explainer.explain(composite_crop, objective=objective, methods=work.methods)
    out_dir = result_dir(context.settings.data_dir, work.result_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "composite.npy", registration.composite.astype(np.float32), allow_pickle=False)
    np.save(out_dir / "plain.npy", registration.plain.astype(np.float32), allow_pickle=False)
    computed = sum(len(missing) for _, missing in maps.todo)
    summary: dict[str, object] = {
        "sharpness": {"plain": round(sharpness(registration.plain), 3),
                      "registered": round(sharpness(registration.composite), 3)},
        "maps_computed": computed, "maps_reused": len(work.cases) * len(work.methods) - computed,
        "registration": f"DIS optical flow onto the running mean, {registration.iterations} iterations",
        "methods": {},
    }
    for method in work.methods:
        group = cohort_maps(per_method[method], registration.flows)
        _save(out_dir, method, group.mean, group.agreement, composite_maps[method])
        summary["methods"][method] = {  # type: ignore[index]
            "n": group.n, "signed": METHODS[method].signed, "mean_abs_max": float(np.abs(group.mean).max()),
            "agreement_mean": round(float(group.agreement.mean()), 4)}
    return summary


def _save(out_dir: Path, method: str, mean: np.ndarray, agreement: np.ndarray, composite: np.ndarray) -> None:
    np.save(out_dir / f"{method}.mean.npy", mean.astype(np.float32), allow_pickle=False)
    np.save(out_dir / f"{method}.agreement.npy", agreement.astype(np.float32), allow_pickle=False)
    np.save(out_dir / f"{method}.composite.npy", np.asarray(composite, dtype=np.float32), allow_pickle=False)
