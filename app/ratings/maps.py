"""A rating study's maps: pinned rows, their states, the blinded labels, and asking again for failed ones.

Service functions take keyword arguments and a session and never commit: routes own the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from app.auth.models import User
from app.cases.models import Case
from app.errors import NotFound
from app.explain.registry import METHODS
from app.explanations import service as explanation_service
from app.explanations.models import Explanation
from app.explanations.service import is_stuck
from app.jobs import service as job_service
from app.jobs.models import DONE, FAILED, QUEUED, RUNNING, Job
from app.nets.registry import LoadedModel
from app.ratings.models import StudyMap, StudyMethod
from app.studies.access import StudyError, case_label, study_case_at, study_cases
from app.studies.models import RatingStudy, StudyCase, StudyItemOrder
from app.studies.order import draw_order, map_label


def item_order(session: Session, *, study: RatingStudy, rater_id: int, case_id: str) -> list[str]:
    """The stored order of one rater's maps of one case, drawn and stored on first use."""
    row = session.scalar(select(StudyItemOrder).where(
        StudyItemOrder.study_id == study.id, StudyItemOrder.rater_id == rater_id, StudyItemOrder.case_id == case_id))
    if row is not None:
        return list(row.methods)
    order = draw_order(study_methods(session, study_id=study.id), seed=study.seed, rater_id=rater_id, case_id=case_id)
    session.add(StudyItemOrder(study_id=study.id, rater_id=rater_id, case_id=case_id, methods=order))
    session.flush()
    return order


def study_methods(session: Session, *, study_id: str) -> list[str]:
    return list(session.scalars(select(StudyMethod.method).where(StudyMethod.study_id == study_id)
                                .order_by(StudyMethod.position)))


def study_maps(session: Session, *, study_id: str, case_id: str | None = None) -> list[tuple[StudyMap, Explanation]]:
    query = (select(StudyMap, Explanation).join(Explanation, Explanation.id == StudyMap.explanation_id)
             .where(StudyMap.study_id == study_id))
    if case_id is not None:
        query = query.where(StudyMap.case_id == case_id)
    return [(row[0], row[1]) for row in session.execute(query)]


def study_map(session: Session, *, study_id: str, explanation_id: str) -> tuple[StudyMap, Explanation]:
    if not (explanation_id.isalnum() and len(explanation_id) <= 32):
        raise NotFound("map in this study")
    pin = session.get(StudyMap, (study_id, explanation_id))
    row = session.get(Explanation, explanation_id) if pin else None
    if pin is None or row is None:
        raise NotFound("map in this study")
    return pin, row


def labelled_map(session: Session, *, study: RatingStudy, rater_id: int, position: int,
                 label: str) -> tuple[StudyCase, StudyMap, Explanation]:
    """A map as one rater addresses it: by the case's position in the study and the label *this rater* sees.

    Blinded pages never carry explanation ids (the same row shows up, with its method, on the case page, in
    other studies and in exports); the label resolves to a map only through the rater's stored order.
    """
    study_case = study_case_at(session, study_id=study.id, position=position)
    order = item_order(session, study=study, rater_id=rater_id, case_id=study_case.case_id)
    method = next((m for i, m in enumerate(order) if map_label(i) == label), None)
    pin = session.scalar(select(StudyMap).where(StudyMap.study_id == study.id,
                                                StudyMap.case_id == study_case.case_id,
                                                StudyMap.method == method)) if method else None
    row = session.get(Explanation, pin.explanation_id) if pin else None
    if pin is None or row is None:
        raise NotFound("map in this study")
    return study_case, pin, row


# --- map states and progress ------------------------------------------------------------------------------

ModelKey = tuple[str, str]  # (model id, model version) of the served model


@dataclass
class MapStates:
    """How far a study's maps are, counted by a grouped query (no row of the study is loaded).

    ``failed`` maps can be asked again; ``unavailable`` ones failed (or their job ended without them) and are
    pinned to a model other than the served one, so they cannot be recomputed. Queued or running maps whose
    job is lost count as failed (or unavailable), never as pending: they would never finish.
    """

    queued: int = 0
    running: int = 0
    done: int = 0
    failed: int = 0
    unavailable: int = 0
    done_per_case: dict[str, int] = field(default_factory=dict)
    pending_cases: set[str] = field(default_factory=set)
    pending_jobs: set[str] = field(default_factory=set)
    lost_jobs: set[str] = field(default_factory=set)

    @property
    def pending(self) -> int:
        return self.queued + self.running

    @property
    def problems(self) -> int:
        return self.failed + self.unavailable

    def to_dict(self) -> dict[str, int]:
        return {"queued": self.queued, "running": self.running, "done": self.done, "failed": self.failed,
                "unavailable": self.unavailable}


def map_states(session: Session, *, study_id: str, served: ModelKey | None = None) -> MapStates:
    """Counts of the study's maps by state. ``served`` (the served model) tells failed maps that can be
    recomputed from unavailable ones; without it (no model loaded) every failed map counts as failed."""
    rows = session.execute(
        select(StudyMap.case_id, Explanation.state, Explanation.model_id, Explanation.model_version,
               Explanation.job_id, func.count())
        .join(Explanation, Explanation.id == StudyMap.explanation_id)
        .where(StudyMap.study_id == study_id)
        .group_by(StudyMap.case_id, Explanation.state, Explanation.model_id, Explanation.model_version,
                  Explanation.job_id)
    )
    states = MapStates()
    lost: dict[str | None, bool] = {None: True}
    for case_id, state, model_id, model_version, job_id, count in rows:
        count = int(count)
        if state == DONE:
            states.done += count
            states.done_per_case[case_id] = states.done_per_case.get(case_id, 0) + count
            continue
        if state in (QUEUED, RUNNING):
            if job_id not in lost:
                lost[job_id] = job_service.is_lost(session, session.get(Job, job_id))
            if not lost[job_id]:
                states.pending_cases.add(case_id)
                states.pending_jobs.add(job_id)
                if state == QUEUED:
                    states.queued += count
                else:
                    states.running += count
                continue
            if job_id is not None:
                states.lost_jobs.add(job_id)
        if served is not None and (model_id, model_version) != served:
            states.unavailable += count
        else:
            states.failed += count
    return states


def problem_maps(session: Session, *, study: RatingStudy, states: MapStates,
                 served: ModelKey | None) -> list[dict[str, Any]]:
    """The study's maps that cannot be rated (failed, lost, or pinned to another model), for admins only:
    they name the method. Only those rows are loaded."""
    if not states.problems:
        return []
    lost = or_(Explanation.job_id.is_(None), Explanation.job_id.in_(sorted(states.lost_jobs)))
    rows = session.execute(
        select(StudyCase, Explanation, Case)
        .join(StudyMap, and_(StudyMap.study_id == StudyCase.study_id, StudyMap.case_id == StudyCase.case_id))
        .join(Explanation, Explanation.id == StudyMap.explanation_id)
        .outerjoin(Case, Case.id == StudyCase.case_id)
        .where(StudyCase.study_id == study.id,
               or_(Explanation.state == FAILED, and_(Explanation.state.in_((QUEUED, RUNNING)), lost)))
        .order_by(StudyCase.position, StudyMap.method)
    )
    ordinals = {c.position: i for i, c in enumerate(study_cases(session, study_id=study.id), start=1)}
    out = []
    for study_case, row, case in rows:
        if row.state != FAILED and not is_stuck(session, row):
            continue
        info = METHODS.get(row.method)
        recomputable = served is None or (row.model_id, row.model_version) == served
        out.append({
            "position": study_case.position, "ordinal": ordinals.get(study_case.position),
            "case": case_label(case, study_case.case_id), "method": row.method,
            "method_label": info.label if info else row.method, "model": row.model_tag,
            "state": "failed" if row.state == FAILED else "lost",
            "error": row.error, "recomputable": recomputable,
        })
    return out


@dataclass
class Retry:
    jobs: list[Job]
    asked: int  # maps asked again
    unavailable: list[Explanation]  # failed maps pinned to another model: cannot be recomputed


def retry_maps(session: Session, *, study: RatingStudy, user: User, model: LoadedModel) -> Retry:
    """Ask again for the study's maps that failed (or whose job ended without them), case by case.

    Only maps of the served model version can be recomputed; the rows stay the same (the cache key holds).
    Maps pinned to another model version are returned as ``unavailable``; when they are all there is, nothing
    can be done and the admin is told so (409) instead of a silent success.
    """
    retry: dict[str, list[Explanation]] = defaultdict(list)
    unavailable: list[Explanation] = []
    served = (model.card.id, model.card.version)
    for _, row in study_maps(session, study_id=study.id):
        if row.state == FAILED or is_stuck(session, row):
            if (row.model_id, row.model_version) == served:
                retry[row.case_id].append(row)
            else:
                unavailable.append(row)
    if unavailable and not retry:
        raise StudyError("maps_unavailable", unavailable_detail(session, study=study, rows=unavailable,
                                                                 model=model), status=409)
    jobs = []
    for case_id, rows in retry.items():
        case = session.get(Case, case_id)
        if case is None:
            continue
        methods = [row.method for row in rows]
        target = explanation_service.Target(rows[0].target_index, model.labels[rows[0].target_index])
        params = {row.method: row.params for row in rows}
        _, _, job = explanation_service.request_explanations(
            session, case=case, user=user, model=model, methods=methods, target=target, params=params)
        if job is not None:
            jobs.append(job)
    return Retry(jobs=jobs, asked=sum(len(rows) for rows in retry.values()), unavailable=unavailable)


def unavailable_detail(session: Session, *, study: RatingStudy, rows: Sequence[Explanation],
                       model: LoadedModel) -> str:
    positions = {c.case_id: c for c in study_cases(session, study_id=study.id)}
    names = []
    for row in sorted(rows, key=lambda r: (positions[r.case_id].position if r.case_id in positions else 0,
                                           r.method)):
        info = METHODS.get(row.method)
        names.append(f"case {case_label(session.get(Case, row.case_id), row.case_id)}: "
                     f"{info.label if info else row.method} ({row.model_tag})")
    listed = "; ".join(names[:20]) + (f"; and {len(names) - 20} more" if len(names) > 20 else "")
    return (f"{len(rows)} map{'' if len(rows) == 1 else 's'} cannot be recomputed: "
            f"{'it is' if len(rows) == 1 else 'they are'} pinned to another model version than the served "
            f"one ({model.card.id}@{model.card.version}). They stay out of every rater's progress. {listed}.")
