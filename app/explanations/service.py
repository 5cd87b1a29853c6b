"""Asking for attribution maps, and reading them back.

A request names methods, a target syndrome and optional parameters. Each (case, model version, method,
target, parameters) exists once in the ``explanations`` table: maps already computed (or being computed)
are reused, only the missing or failed ones go into a new job. That makes asking twice free and makes
every map reproducible from its row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.errors import DomainError
from app.explain.fast import EXACT, effective_mode
from app.explain.registry import DEFAULT_PANEL, METHODS, get_method, method_info, normalise_params, require_methods
from app.explanations.map_store import MapKey, find_or_create_map
from app.explanations.map_store import map_stats as map_stats  # re-exported: older callers import them here
from app.explanations.map_store import npy_bytes as npy_bytes
from app.explanations.map_store import params_key as params_key
from app.explanations.map_store import read_map as read_map
from app.explanations.models import Explanation
from app.jobs import service as job_service
from app.jobs.models import FAILED, QUEUED, RUNNING, Job
from app.nets.card import Label
from app.nets.registry import LoadedModel
from app.predictions.models import PredictionRun

EXPLAIN_JOB = "explain"


@dataclass(frozen=True)
class Target:
    index: int
    label: Label


def check_methods(methods: Sequence[str] | None) -> list[str]:
    """The requested ids in order without repeats (none: the default panel); the registry refuses unknown ones."""
    return require_methods(methods or DEFAULT_PANEL)


def resolve_target(model: LoadedModel, target: str | int | None, run: PredictionRun | None) -> Target:
    """None → the top-ranked syndrome of the case's ranking by this model; else a label id or class index."""
    ids = [label.id for label in model.labels]
    if target is None:
        if run is None or run.model_id != model.card.id or run.model_version != model.card.version or not run.ranked:
            raise DomainError("no_ranking", "The case has no ranking by the served model; rank it first "
                              "or name a target syndrome.")
        # the best-ranked syndrome the head knows (a gallery- or case-only syndrome has no logit to explain)
        target = next((r["syndrome_id"] for r in run.ranked if r["syndrome_id"] in ids), run.ranked[0]["syndrome_id"])
    if isinstance(target, bool):
        raise DomainError("unknown_target", "target must be a syndrome id or a class index")
    if isinstance(target, int):
        if not 0 <= target < len(ids):
            raise DomainError("unknown_target", f"target index {target} is outside 0..{len(ids) - 1}")
        return Target(target, model.labels[target])
    if target not in ids:
        raise DomainError("unknown_target", f"{target!r} is not a syndrome of model {model.version}; "
                          f"known: {', '.join(ids)}")
    index = ids.index(target)
    return Target(index, model.labels[index])


def checked_params(methods: Sequence[str], params: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    params = dict(params or {})
    stray = [m for m in params if m not in methods]
    if stray:
        raise DomainError("invalid_params", f"Parameters given for methods not requested: {', '.join(stray)}")
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        given = params.get(method)
        if given is not None and not isinstance(given, Mapping):
            raise DomainError("invalid_params", f"Parameters for {method} must be an object")
        try:
            out[method] = normalise_params(method, given)
        except ValueError as exc:
            raise DomainError("invalid_params", f"{method}: {exc}") from exc
    return out


#: ``params["member"]`` of an ensemble's map: the logit averaged over the members with a head (app.explain.ensemble).
MEAN_MEMBER = "mean"


def resolve_member(model: LoadedModel, member: str | int | None, methods: Sequence[str], *,
                   default_panel: bool) -> tuple[str | None, list[str]]:
    """Which network(s) of the served model a request explains: (the ``member`` value stored in each map's
    params, or None for a single-network model; the methods to compute).

    Single network: ``member`` must be null, 0, ``"m0"`` or the model's id (they all mean the one network) and
    nothing is stored, so the maps and their cache keys are exactly those from before ensembles. Ensemble:
    null averages the target logit over the members with a head (``"mean"``), allowed only for the methods whose
    map of a mean is the mean of the maps (``LINEAR_METHODS``; the default panel shrinks to those); an index,
    ``"m<k>"`` or a member's id chooses that network (it must have a syndrome head). Part of the cache key: one
    member's map and the averaged map are different stored maps.
    """
    from app.explain.ensemble import LINEAR_METHODS

    members = model.ensemble
    if isinstance(member, bool):
        raise DomainError("invalid_params", "member must be null, a member index or a member id")
    chosen = None
    if member is not None:
        chosen = next((m for i, m in enumerate(members) if member in (i, m.name, m.id)), None)
        if chosen is None:
            known = ", ".join(f"{i} = {m.name} ({m.id})" for i, m in enumerate(members))
            raise DomainError("invalid_params", f"Unknown ensemble member {member!r}; model {model.version} "
                              f"has {known}.")
    if not model.members:  # one network: null and "m0" are the same maps, stored as they always were
        return None, list(methods)
    if chosen is not None:
        if not chosen.has_head:
            raise DomainError("invalid_params", f"Member {chosen.name} ({chosen.id}) has no syndrome head, so "
                              "it has no target logit to explain; choose a member with a head.")
        return chosen.name, list(methods)
    if sum(m.has_head for m in members) > 1:
        if default_panel:
            methods = [m for m in methods if m in LINEAR_METHODS]
        nonlinear = [m for m in methods if m not in LINEAR_METHODS]
        if nonlinear:
            raise DomainError("invalid_params", f"{', '.join(nonlinear)} cannot be averaged over the "
                              "ensemble's members (the mean of their maps is not the map of the mean "
                              "logit); choose one member (\"member\": \"m0\", an index or a member id) or use "
                              f"{', '.join(sorted(LINEAR_METHODS))}.")
    return MEAN_MEMBER, list(methods)


def with_member(params: Mapping[str, Mapping[str, Any]], member: str | None) -> dict[str, dict[str, Any]]:
    """The per-method parameters with the chosen member folded in (so into the row and its cache key)."""
    return {method: {**given, **({"member": member} if member is not None else {})} for method, given in params.items()}


#: The most forward+backward passes of one image a single request may cost (the engine's cost model, shared
#: passes counted once). The default panel costs about 200; integrated gradients with 1000 steps 1000;
#: occlusion at stride 2 about 680. Beyond this a job would hold a worker for many minutes on a large net
#: (IG 1000 + SmoothGrad 500 + occlusion stride 1 is about 4150: hours of CPU on iResNet-100).
MAX_JOB_PASSES = 1500.0


def job_cost(methods: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> float:
    costs: dict[str, float] = {}
    for method in methods:
        costs.update(get_method(method).passes(params[method]))
    return float(sum(costs.values()))


def expected_seconds(rows: Sequence[Explanation]) -> float | None:
    """Seconds a job computing ``rows`` should take: the engine's passes (shared passes counted once per group of
    maps on one image) times the bench-fitted seconds per pass (app/evaluate/cost_model.json). The job's real
    durations then calibrate it per machine (app.jobs.outlook)."""
    from app.evaluate.plan import expected_seconds as seconds_for

    groups: dict[tuple[Any, ...], dict[str, float]] = {}
    for row in rows:
        params = {k: v for k, v in dict(row.params).items() if k != "member"}
        passes = get_method(row.method).passes(params)  # validated when the row was asked for
        group = (row.target_index, row.objective, row.subject, row.mode, dict(row.params).get("member"))
        groups.setdefault(group, {}).update(passes)
    return seconds_for({str(i): sum(c.values()) for i, c in enumerate(groups.values())}, threads=2)


def check_cost(methods: Sequence[str], params: Mapping[str, Mapping[str, Any]], *, networks: int = 1) -> None:
    """``networks``: how many networks each map runs on (an ensemble's averaged maps run on every member)."""
    cost = job_cost(methods, params) * networks
    if cost > MAX_JOB_PASSES:
        raise DomainError("invalid_params", f"These parameters cost {cost:.0f} network passes; a request may "
                          f"cost at most {MAX_JOB_PASSES:.0f} (fewer steps or samples, a larger stride, "
                          f"or fewer methods per request).")


def active_jobs(session: Session, *, user: User, exclude: str | None = None) -> int:
    """The user's jobs that still wait or run (lost ones do not count: they will never finish)."""
    query = select(Job).where(Job.owner_id == user.id, Job.state.in_((QUEUED, RUNNING)))
    if exclude is not None:
        query = query.where(Job.id != exclude)
    return sum(1 for job in session.scalars(query) if not job_service.is_lost(session, job))


def is_stuck(session: Session, row: Explanation) -> bool:
    """A queued/running row whose job is finished, gone or stale will never be computed: ask again."""
    if row.state not in (QUEUED, RUNNING):
        return False
    return job_service.is_lost(session, session.get(Job, row.job_id) if row.job_id else None)


def request_explanations(
    session: Session,
    *,
    case: Case,
    user: User,
    model: LoadedModel,
    methods: Sequence[str],
    target: Target,
    params: Mapping[str, dict[str, Any]],
    mode: str = EXACT,
) -> tuple[str | None, list[Explanation], Job | None]:
    """Find or create one row per method; put the missing ones into a new job (not yet submitted).

    ``mode`` ("exact" or "fast", app.explain.fast) is asked for the request; each row gets the mode its method
    really runs in (fast only where offered), so a fast request reuses the exact maps of the other methods.

    Returns (the job id to poll, or None when every map is ready; the rows in method order; the new job).
    The caller commits, then hands the new job to the runner.
    """
    rows: list[Explanation] = []
    pending: list[Explanation] = []
    for method in methods:
        key = MapKey(case_id=case.id, model_id=model.card.id, model_version=model.card.version, method=method,
                     target_id=target.label.id, params=params[method], mode=effective_mode(method, mode))
        row, new = find_or_create_map(session, key, requested_by=user.id, target_index=target.index,
                                      target_name=target.label.name)
        if new:
            pending.append(row)
        elif row.state == FAILED or is_stuck(session, row):
            row.state, row.error, row.requested_by = QUEUED, None, user.id
            pending.append(row)
        rows.append(row)
    session.flush()
    job = None
    if pending:
        job = job_service.create_job(session, kind=EXPLAIN_JOB, owner=user, case_id=case.id,
                                     payload={"explanation_ids": [row.id for row in pending]},
                                     estimated_s=expected_seconds(pending))
        for row in pending:
            row.job_id = job.id
        session.flush()
        return job.id, rows, job
    waiting = next((row.job_id for row in rows if row.state in (QUEUED, RUNNING)), None)
    return waiting, rows, None


def explanations_for_case(session: Session, *, case_id: str) -> list[Explanation]:
    query = select(Explanation).where(Explanation.case_id == case_id).order_by(Explanation.created_at.desc())
    return list(session.scalars(query))


def get_explanation_for(session: Session, *, explanation_id: str, user: User) -> Explanation | None:
    """The row if the user may see its case (owner or admin), else None → 404."""
    row = session.get(Explanation, explanation_id)
    if row is None:
        return None
    case = session.get(Case, row.case_id)
    if case is None or (user.role != "admin" and case.owner_id != user.id):
        return None
    return row


def explanation_out(row: Explanation) -> dict[str, Any]:
    info = METHODS.get(row.method)
    base = f"/api/v1/explanations/{row.id}"
    return {
        "id": row.id,
        "case_id": row.case_id,
        "method": row.method,
        "label": info.label if info else row.method,
        "signed": info.signed if info else None,
        "target": {"id": row.target_id, "name": row.target_name, "index": row.target_index},
        "objective": row.objective,  # "logit" (the target's) or a similarity key, app.explain.objectives
        "subject": row.subject or None,  # None: drawn on the case's crop; "gallery:<id>": on that gallery face
        "model": row.model_tag,
        "params": row.params,
        # which network of an ensemble: "mean" (logit averaged over the members), "m<k>"; None = the only one
        "member": (row.params or {}).get("member"),
        "mode": row.mode,  # "exact" or "fast" (a measured approximation, app.explain.fast)
        "status": row.state,
        "error": row.error,
        "job_id": row.job_id,
        "stats": row.stats,
        "duration_ms": row.duration_ms,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "urls": {"png": f"{base}/map.png", "npy": f"{base}/map.npy"} if row.state == "done" else None,
    }


def method_label(method: str) -> str:
    return method_info(method).label
