"""Cohorts of one syndrome: who is in them, the privacy floor, asking for a composite and syndrome-wise maps.

A syndrome's cohort, for one user, is the set of cases with that *confirmed* diagnosis (``cases.
diagnosis_syndrome_id``, a syndrome of the served model) that the user may see: their own, or all for an
admin. Derived group data needs at least ``floor`` distinct patients, where cases sharing a pseudonym or an
identical photo are one patient (a case sharing neither is its own patient). The floor is
``GESTALTLENS_COHORT_MIN_PATIENTS`` (default 5, never below 5, see :data:`MIN_PATIENTS`). Below it the
answer is 422 ``too_few_cases`` naming the floor and the count, and nothing is computed or stored.

A result is keyed by user, model version, syndrome, objective, methods and a digest of the exact case set,
so it is served only to the user whose visible cases made it, and a new case, an erasure or a changed
diagnosis changes the digest and asks for a new one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.cohorts.models import CohortResult
from app.errors import DomainError
from app.explain.registry import DEFAULT_PANEL, require_methods
from app.jobs import service as job_service
from app.jobs.models import FAILED, QUEUED, RUNNING, Job
from app.nets.registry import LoadedModel

COHORT_JOB = "cohort"
#: The privacy floor can be raised by configuration, never lowered below this.
MIN_PATIENTS = 5
OBJECTIVES = ("logit", "similarity")


@dataclass(frozen=True)
class Cohort:
    syndrome_id: str
    name: str
    cases: list[Case]
    n_patients: int
    floor: int

    @property
    def passes(self) -> bool:
        return self.n_patients >= self.floor


def patient_count(cases: Sequence[Case]) -> int:
    """Distinct patients: cases linked by a shared pseudonym or by an identical photo (the same SHA-256 of the
    stored, re-encoded photo) are one patient, transitively; a case linked to none counts alone. Without the
    photo link, one photo uploaded five times without a pseudonym passed the floor as five patients."""
    parent = list(range(len(cases)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, case in enumerate(cases):
        keys = [("photo", case.photo_sha256)] if case.photo_sha256 else []
        if case.pseudonym and case.pseudonym.strip():
            keys.append(("pseudonym", case.pseudonym.strip().casefold()))
        for key in keys:
            parent[root(i)] = root(first.setdefault(key, i))
    return len({root(i) for i in range(len(cases))})


def cohort(session: Session, *, user: User, model: LoadedModel, syndrome_id: str, floor: int) -> Cohort:
    names = {label.id: label.name for label in model.labels}
    if syndrome_id not in names:
        raise DomainError("unknown_target", f"{syndrome_id!r} is not a syndrome of model {model.version}")
    query = select(Case).where(Case.diagnosis_syndrome_id == syndrome_id).order_by(Case.id)
    if not user.is_admin:
        query = query.where(Case.owner_id == user.id)
    cases = list(session.scalars(query))
    return Cohort(syndrome_id, names[syndrome_id], cases, patient_count(cases), max(MIN_PATIENTS, floor))


def overview(session: Session, *, user: User, model: LoadedModel, floor: int) -> list[Cohort]:
    """Every syndrome of the model with its visible confirmed cases (the Syndromes page)."""
    return [cohort(session, user=user, model=model, syndrome_id=label.id, floor=floor) for label in model.labels]


def objective_key(objective: str, syndrome_id: str) -> str:
    if objective not in OBJECTIVES:
        raise DomainError("invalid_request", f"objective must be one of {', '.join(OBJECTIVES)}")
    return "logit" if objective == "logit" else f"similarity:centroid:{syndrome_id}"


def check_methods(methods: Sequence[str] | None) -> list[str]:
    """The requested ids in order without repeats (none: the ten-method panel); the registry refuses unknown ones."""
    return require_methods(methods or DEFAULT_PANEL)


def _digest(cases: Sequence[Case], methods: Sequence[str]) -> str:
    payload = {"cases": sorted(c.id for c in cases), "methods": list(methods)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def require_floor(group: Cohort) -> None:
    if not group.passes:
        raise DomainError("too_few_cases", f"{group.name} has {group.n_patients} distinct patient(s) among the "
                          f"cases you may see; composites and syndrome-wise maps need at least {group.floor}.",
                          floor=group.floor, count=group.n_patients)


def find_result(session: Session, *, user: User, model: LoadedModel, group: Cohort, objective: str,
                methods: Sequence[str]) -> CohortResult | None:
    """This user's result for exactly this case set, or None."""
    return session.scalar(select(CohortResult).where(
        CohortResult.owner_id == user.id, CohortResult.model_id == model.card.id,
        CohortResult.model_version == model.card.version, CohortResult.syndrome_id == group.syndrome_id,
        CohortResult.objective == objective, CohortResult.digest == _digest(group.cases, methods),
    ).order_by(CohortResult.created_at.desc()).limit(1))


def request_cohort(session: Session, *, user: User, model: LoadedModel, group: Cohort, objective: str,
                   methods: Sequence[str], data_dir: Path) -> tuple[CohortResult, str | None]:
    """Refuse below the floor; else the stored result or a new one with its job (not yet submitted)."""
    require_floor(group)
    sweep_files(session, data_dir)
    row = find_result(session, user=user, model=model, group=group, objective=objective, methods=methods)
    if row is not None and row.state != FAILED and not (
            row.state in (QUEUED, RUNNING) and job_service.is_lost(session, session.get(Job, row.job_id)
                                                                   if row.job_id else None)):
        return row, (row.job_id if row.state in (QUEUED, RUNNING) else None)
    for old in session.scalars(select(CohortResult).where(   # superseded results of this user and syndrome
            CohortResult.owner_id == user.id, CohortResult.syndrome_id == group.syndrome_id,
            CohortResult.objective == objective)):
        shutil.rmtree(result_dir(data_dir, old.id), ignore_errors=True)
        session.delete(old)
    session.flush()
    row = CohortResult(owner_id=user.id, model_id=model.card.id, model_version=model.card.version,
                       syndrome_id=group.syndrome_id, objective=objective, methods=list(methods),
                       case_ids=[c.id for c in group.cases], n_patients=group.n_patients,
                       digest=_digest(group.cases, methods), state=QUEUED)
    session.add(row)
    session.flush()
    job = job_service.create_job(session, kind=COHORT_JOB, owner=user, case_id=None, payload={"cohort_id": row.id},
                                 estimated_s=expected_seconds(methods, len(group.cases)))
    row.job_id = job.id
    session.flush()
    return row, job.id


def expected_seconds(methods: Sequence[str], n_cases: int) -> float | None:
    """Seconds a cohort job should take: each case's maps at their default parameters (network passes, shared
    passes once per case) times the bench-fitted seconds per pass; stored maps it reuses make it shorter, and
    the lane's calibration (app.jobs.outlook) learns by how much."""
    from app.evaluate.plan import expected_seconds as seconds_for
    from app.explain.registry import get_method, normalise_params

    passes: dict[str, float] = {}
    for method in methods:
        passes.update(get_method(method).passes(normalise_params(method, None)))
    return seconds_for({"cases": n_cases * sum(passes.values())}, threads=2)


def result_dir(data_dir: Path, result_id: str) -> Path:
    if not result_id.isalnum():
        raise ValueError("bad result id")
    return data_dir / "cohorts" / result_id


def get_result_for(session: Session, *, user: User, result_id: str) -> CohortResult | None:
    """The result if it is this user's (results are never shared, not even with admins: they are per view)."""
    row = session.get(CohortResult, result_id) if result_id.isalnum() and len(result_id) <= 32 else None
    return row if row is not None and row.owner_id == user.id else None


def cohort_out(group: Cohort) -> dict[str, Any]:
    return {"syndrome_id": group.syndrome_id, "name": group.name, "n_cases": len(group.cases),
            "n_patients": group.n_patients, "floor": group.floor, "passes_floor": group.passes}


def result_out(row: CohortResult) -> dict[str, Any]:
    base = f"/api/v1/cohorts/{row.id}"
    done = row.state == "done"
    methods = list(row.methods)
    return {
        "id": row.id, "syndrome_id": row.syndrome_id, "objective": row.objective, "model": f"{row.model_id}@"
        f"{row.model_version}", "methods": methods, "n_cases": len(row.case_ids), "n_patients": row.n_patients,
        "status": row.state, "error": row.error, "job_id": row.job_id, "result": row.result,
        "created_at": row.created_at.isoformat(),
        "urls": {
            "composite": f"{base}/composite.png", "plain": f"{base}/composite.png?kind=plain",
            "maps": {m: {kind: f"{base}/maps/{m}.png?kind={kind}" for kind in ("mean", "agreement", "composite")}
                     | {"npy": f"{base}/maps/{m}.npy?kind=mean"} for m in methods},
        } if done else None,
    }


def sweep_files(session: Session, data_dir: Path) -> None:
    """Remove result folders whose row is gone (a crash between an erasure's commit and its file removal)."""
    root = data_dir / "cohorts"
    if not root.is_dir():
        return
    known = set(session.scalars(select(CohortResult.id)))
    for folder in root.iterdir():
        if folder.is_dir() and folder.name not in known:
            shutil.rmtree(folder, ignore_errors=True)
