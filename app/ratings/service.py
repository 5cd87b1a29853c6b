"""Rating studies and ratings: creation, membership, per-rater orders, append-only ratings, read-outs.

Service functions take keyword arguments and a session and never commit: routes own the transaction.
Access rules, in one place:

* a study is visible to its raters and to admins; to anyone else it does not exist (404);
* only raters of a study rate in it, and only while it is open;
* results (which name the methods) are for admins, and for the study's raters once the study is closed;
* ad-hoc ratings (``study_id`` NULL) follow the case: whoever may see the map may rate it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.db import utcnow
from app.explain.registry import METHODS
from app.explanations import service as explanation_service
from app.explanations.models import Explanation
from app.explanations.service import is_stuck
from app.jobs import service as job_service
from app.jobs.models import DONE, FAILED, QUEUED, RUNNING, Job
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png, latest_run, rank_crop, store_run
from app.ratings import stats
from app.ratings.models import (
    CONFIRMED,
    TARGET_RULES,
    TOP1,
    Rating,
    RatingStudy,
    StudyCase,
    StudyItemOrder,
    StudyMap,
    StudyMethod,
    StudyRater,
)
from app.synth.regions import REGION_IDS, REGIONS
from app.web.errors import ApiError, NotFound

MAX_CASES = 200
MAX_NAME = 200
MAX_COMMENT = 2000

TARGET_RULE_LABELS = {TOP1: "top-1 syndrome of the model's ranking", CONFIRMED: "confirmed diagnosis"}


class RatingError(ApiError):
    """Bad input for a study or a rating: the API answers 422 with this code."""

    def __init__(self, code: str, detail: str, status_code: int = 422) -> None:
        super().__init__(status_code, code, detail)


# --- labels and orders ------------------------------------------------------------------------------------


def map_label(index: int) -> str:
    """0 → "A", 25 → "Z", 26 → "AA" (a study has at most ten methods, but never fail)."""
    label = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        label = chr(65 + rest) + label
    return label


def draw_order(methods: Sequence[str], *, seed: int, rater_id: int, case_id: str) -> list[str]:
    """A permutation of ``methods`` that depends only on (study seed, rater, case): the same inputs always
    give the same order (the order is stored as well, so a change of this function changes no study)."""
    digest = hashlib.sha256(f"{seed}:{rater_id}:{case_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:16], "big"))
    return [methods[i] for i in rng.permutation(len(methods))]


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


# --- reading studies --------------------------------------------------------------------------------------


def is_member(session: Session, *, study_id: str, user_id: int) -> bool:
    return session.get(StudyRater, (study_id, user_id)) is not None


def get_study(session: Session, *, study_id: str, user: User) -> RatingStudy:
    """The study if ``user`` is one of its raters or an admin; otherwise it does not exist (404)."""
    study = session.get(RatingStudy, study_id) if study_id.isalnum() and len(study_id) <= 32 else None
    if study is None or not (user.is_admin or is_member(session, study_id=study.id, user_id=user.id)):
        raise NotFound("study")
    return study


def require_rater(session: Session, *, study: RatingStudy, user: User) -> None:
    if not is_member(session, study_id=study.id, user_id=user.id):
        raise ApiError(403, "not_a_rater", "Only the raters of this study rate in it.")


def can_see_results(session: Session, *, study: RatingStudy, user: User) -> bool:
    return user.is_admin or (study.is_closed and is_member(session, study_id=study.id, user_id=user.id))


def require_results(session: Session, *, study: RatingStudy, user: User) -> None:
    if not can_see_results(session, study=study, user=user):
        raise ApiError(403, "results_not_open", "The results are shown to raters once an admin closes the study "
                       "(they name the methods, which would unblind the ratings).")


def studies_for(session: Session, *, user: User) -> list[RatingStudy]:
    query = select(RatingStudy).order_by(RatingStudy.created_at.desc(), RatingStudy.id)
    if not user.is_admin:
        query = query.join(StudyRater, StudyRater.study_id == RatingStudy.id).where(StudyRater.user_id == user.id)
    return list(session.scalars(query))


def study_methods(session: Session, *, study_id: str) -> list[str]:
    return list(session.scalars(select(StudyMethod.method).where(StudyMethod.study_id == study_id)
                                .order_by(StudyMethod.position)))


def study_cases(session: Session, *, study_id: str) -> list[StudyCase]:
    return list(session.scalars(select(StudyCase).where(StudyCase.study_id == study_id)
                                .order_by(StudyCase.position)))


def study_case_at(session: Session, *, study_id: str, position: int) -> StudyCase:
    row = session.scalar(select(StudyCase).where(StudyCase.study_id == study_id, StudyCase.position == position))
    if row is None:
        raise NotFound("case in this study")
    return row


def study_raters(session: Session, *, study_id: str) -> list[StudyRater]:
    rows = session.scalars(select(StudyRater).where(StudyRater.study_id == study_id))
    return sorted(rows, key=lambda r: r.user.username)


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


def case_in_study(session: Session, case_id: str) -> bool:
    """True when the case belongs to any rating study, open or closed.

    Deleting such a case would take its maps and every rater's ratings of them with it (the foreign keys
    cascade), silently changing a study's published results: the cases domain refuses the deletion.
    """
    return bool(session.scalar(select(exists().where(StudyCase.case_id == case_id))))


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


@dataclass
class Progress:
    rated: int  # maps of the study this rater has rated at least once (computed maps only)
    total: int  # maps that can be rated: computed ones; failed and unavailable maps do not count
    pending: int = 0  # maps still being computed: once done they count too
    per_case: dict[str, int] = field(default_factory=dict)  # case id → maps rated
    done_per_case: dict[str, int] = field(default_factory=dict)  # case id → maps that can be rated
    pending_cases: set[str] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.rated >= self.total and self.pending == 0

    def case_total(self, case_id: str) -> int:
        return self.done_per_case.get(case_id, 0)

    def first_open(self, cases: Sequence[StudyCase]) -> StudyCase | None:
        """The first case with a computed map this rater has not rated; else the first still being computed."""
        for case in cases:
            if self.per_case.get(case.case_id, 0) < self.done_per_case.get(case.case_id, 0):
                return case
        return next((case for case in cases if case.case_id in self.pending_cases), None)

    def first_open_position(self, cases: Sequence[StudyCase]) -> int | None:
        case = self.first_open(cases)
        return case.position if case else None

    def to_dict(self) -> dict[str, Any]:
        return {"rated": self.rated, "total": self.total, "pending": self.pending, "complete": self.complete}


def progress(session: Session, *, study: RatingStudy, rater_id: int, states: MapStates | None = None) -> Progress:
    states = states if states is not None else map_states(session, study_id=study.id)
    rated = session.execute(
        select(Rating.case_id, func.count(func.distinct(Rating.explanation_id)))
        .join(StudyMap, and_(StudyMap.study_id == Rating.study_id, StudyMap.explanation_id == Rating.explanation_id))
        .join(Explanation, Explanation.id == Rating.explanation_id)
        .where(Rating.study_id == study.id, Rating.rater_id == rater_id, Explanation.state == DONE)
        .group_by(Rating.case_id)
    )
    per_case = {case_id: int(count) for case_id, count in rated}
    return Progress(rated=sum(per_case.values()), total=states.done, pending=states.pending, per_case=per_case,
                    done_per_case=dict(states.done_per_case), pending_cases=set(states.pending_cases))


def is_complete(session: Session, *, study: RatingStudy, states: MapStates | None = None) -> bool:
    states = states if states is not None else map_states(session, study_id=study.id)
    raters = study_raters(session, study_id=study.id)
    return bool(raters) and all(progress(session, study=study, rater_id=r.user_id, states=states).complete
                                for r in raters)


def case_label(case: Case | None, case_id: str) -> str:
    return (case.pseudonym if case and case.pseudonym else None) or case_id[:8]


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


def blinding_warnings(session: Session, *, study: RatingStudy) -> list[str]:
    """Raters who can see a study case's maps *with* their method names elsewhere (admins see every case
    page; owners see their own): their ratings of those cases are not blind. For the admin's eyes."""
    if not study.blinded:
        return []
    warnings = []
    raters = study_raters(session, study_id=study.id)
    for rater in raters:
        if rater.user.is_admin:
            warnings.append(f"{rater.user.username} is an admin: admins can open every case page, where these "
                            "maps are shown with their method names.")
    owned = session.execute(
        select(User.username, StudyCase.position, StudyCase.case_id, Case.pseudonym)
        .join(StudyRater, StudyRater.user_id == User.id)
        .join(StudyCase, StudyCase.study_id == StudyRater.study_id)
        .join(Case, and_(Case.id == StudyCase.case_id, Case.owner_id == User.id))
        .where(StudyRater.study_id == study.id, User.role != "admin")
        .order_by(User.username, StudyCase.position)
    )
    by_rater: dict[str, list[str]] = defaultdict(list)
    for username, _, case_id, pseudonym in owned:
        by_rater[username].append(pseudonym or case_id[:8])
    for username, labels in by_rater.items():
        cases = ", ".join(labels[:10]) + (f" and {len(labels) - 10} more" if len(labels) > 10 else "")
        warnings.append(f"{username} owns {len(labels)} case{'' if len(labels) == 1 else 's'} of this study "
                        f"({cases}): on their case page the same maps are shown with their method names, so "
                        "their ratings of these cases are not blind.")
    return warnings


# --- creating studies -------------------------------------------------------------------------------------


def clean_text(value: str | None, *, limit: int) -> str | None:
    """Printable characters (plus line breaks and tabs), stripped; empty → None; too long → 422."""
    if value is None:
        return None
    cleaned = "".join(ch for ch in value if ch.isprintable() or ch in "\n\t").strip()
    if len(cleaned) > limit:
        raise RatingError("too_long", f"At most {limit} characters.")
    return cleaned or None


def resolve_target(session: Session, *, case: Case, rule: str, model: LoadedModel, store: PhotoStore,
                   case_label: str) -> explanation_service.Target:
    """The syndrome a case's maps explain: the ranking's top-1 by the served model, or the confirmed diagnosis."""
    if rule == TOP1:
        run = latest_run(session, case_id=case.id)
        if run is None or (run.model_id, run.model_version) != (model.card.id, model.card.version):
            run = store_run(session, case=case, model=model,
                            result=rank_crop(model, decode_png(store.read(case.aligned_path))))
        try:
            return explanation_service.resolve_target(model, None, run)
        except explanation_service.ExplainRequestError as exc:
            raise RatingError(exc.code, f"{case_label}: {exc.detail}") from exc
    from app.diagnoses.service import current_diagnosis

    diagnosis = current_diagnosis(session, case_id=case.id)
    if diagnosis is None:
        raise RatingError("no_confirmed_diagnosis", f"{case_label} has no confirmed diagnosis. Confirm one on the "
                          "case page, leave the case out, or use the top-1 target rule.")
    ids = [label.id for label in model.labels]
    if diagnosis.syndrome_id is None or diagnosis.syndrome_id not in ids:
        raise RatingError("diagnosis_not_a_label", f"The confirmed diagnosis of {case_label} "
                          f"({diagnosis.name or diagnosis.syndrome_id}) is not a syndrome of model {model.version}: "
                          "maps can only explain the model's own labels. Leave the case out or use the top-1 rule.")
    index = ids.index(diagnosis.syndrome_id)
    return explanation_service.Target(index, model.labels[index])


@dataclass
class StudyRequest:
    name: str
    case_ids: list[str]
    methods: list[str]
    target_rule: str
    raters: list[str]  # usernames
    blinded: bool = True


def _check_request(session: Session, *, admin: User, body: StudyRequest) -> tuple[str, list[Case], list[User]]:
    name = clean_text(body.name, limit=MAX_NAME)
    if not name:
        raise RatingError("invalid_name", "Give the study a name.")
    if body.target_rule not in TARGET_RULES:
        raise RatingError("invalid_target_rule", f"target_rule is one of: {', '.join(TARGET_RULES)}.")
    case_ids = list(dict.fromkeys(body.case_ids))
    if not case_ids:
        raise RatingError("no_cases", "Choose at least one case.")
    if len(case_ids) > MAX_CASES:
        raise RatingError("too_many_cases", f"A study has at most {MAX_CASES} cases.")
    cases = []
    for case_id in case_ids:
        case = session.get(Case, case_id) if isinstance(case_id, str) and case_id.isalnum() else None
        if case is None or not (admin.is_admin or case.owner_id == admin.id):
            raise RatingError("unknown_case", f"No such case: {str(case_id)[:40]!r}.")
        cases.append(case)
    if not body.methods:
        raise RatingError("no_methods", "Choose at least one method.")
    unknown = [m for m in body.methods if m not in METHODS]
    if unknown:
        raise RatingError("unknown_method", f"Unknown method(s): {', '.join(map(str, unknown))}. "
                          f"Known: {', '.join(METHODS)}.")
    usernames = list(dict.fromkeys(body.raters))
    if not usernames:
        raise RatingError("no_raters", "Choose at least one rater.")
    users = list(session.scalars(select(User).where(User.username.in_(usernames), User.is_active.is_(True))))
    missing = sorted(set(usernames) - {u.username for u in users})
    if missing:
        raise RatingError("unknown_rater", f"No active user(s): {', '.join(missing)}.")
    users.sort(key=lambda u: usernames.index(u.username))
    return name, cases, users


def create_study(session: Session, *, admin: User, body: StudyRequest, model: LoadedModel, store: PhotoStore,
                 ip: str | None = None) -> tuple[RatingStudy, list[Job]]:
    """Create the study, pin one map per (case, method) and ask for the missing ones (jobs not yet submitted).

    Returns the study and the new jobs; the caller commits, then hands the jobs to the runner.
    """
    name, cases, raters = _check_request(session, admin=admin, body=body)
    methods = list(dict.fromkeys(body.methods))
    params = explanation_service.checked_params(methods, None)
    study = RatingStudy(name=name, target_rule=body.target_rule, blinded=bool(body.blinded),
                        seed=secrets.randbelow(2**31), created_by=admin.id)
    session.add(study)
    session.flush()
    jobs: list[Job] = []
    for position, case in enumerate(cases, start=1):
        label = f"Case {case.pseudonym or case.id[:8]}"
        target = resolve_target(session, case=case, rule=body.target_rule, model=model, store=store, case_label=label)
        session.add(StudyCase(study_id=study.id, case_id=case.id, position=position, target_id=target.label.id,
                              target_name=target.label.name))
        _, rows, job = explanation_service.request_explanations(
            session, case=case, user=admin, model=model, methods=methods, target=target, params=params)
        for row in rows:
            session.add(StudyMap(study_id=study.id, explanation_id=row.id, case_id=case.id, method=row.method))
        if job is not None:
            jobs.append(job)
        audit.record(session, action="explain", user=admin, case_id=case.id, ip=ip,
                     detail={"methods": methods, "target": target.label.id, "model": model.version,
                             "job": job.id if job else None, "study": study.id})
    for position, method in enumerate(methods):
        session.add(StudyMethod(study_id=study.id, method=method, position=position))
    for rater in raters:
        session.add(StudyRater(study_id=study.id, user_id=rater.id))
    session.flush()
    for rater in raters:
        for case in cases:
            session.add(StudyItemOrder(study_id=study.id, rater_id=rater.id, case_id=case.id,
                                       methods=draw_order(methods, seed=study.seed, rater_id=rater.id,
                                                          case_id=case.id)))
    audit.record(session, action="study_create", user=admin, ip=ip,
                 detail={"study": study.id, "cases": len(cases), "methods": methods, "target_rule": study.target_rule,
                         "raters": [r.username for r in raters], "blinded": study.blinded})
    session.flush()
    return study, jobs


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
        raise RatingError("maps_unavailable", unavailable_detail(session, study=study, rows=unavailable,
                                                                 model=model), status_code=409)
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


def close_study(session: Session, *, study: RatingStudy, user: User, ip: str | None = None) -> None:
    if study.closed_at is None:
        study.closed_at = utcnow()
        audit.record(session, action="study_close", user=user, ip=ip, detail={"study": study.id})
        session.flush()


def delete_study(session: Session, *, study: RatingStudy, user: User, ip: str | None = None) -> int:
    """Delete a study with its cases list, maps, orders and ratings (the database cascades); the maps
    themselves stay with their cases. Returns how many ratings went with it. The caller commits."""
    ratings = session.scalar(select(func.count()).select_from(Rating).where(Rating.study_id == study.id)) or 0
    audit.record(session, action="study_delete", user=user, ip=ip,
                 detail={"study": study.id, "name": study.name, "ratings": ratings})
    session.execute(delete(RatingStudy).where(RatingStudy.id == study.id))
    return ratings


# --- ratings ----------------------------------------------------------------------------------------------


def check_regions(regions: Iterable[str]) -> list[str]:
    """Region ids from the vocabulary, in vocabulary order, without repeats; anything else is a 422."""
    given = list(regions)
    unknown = [r for r in given if r not in REGION_IDS]
    if unknown:
        raise RatingError("unknown_region", f"Unknown region(s): {', '.join(str(r)[:40] for r in unknown)}. "
                          f"Known: {', '.join(REGION_IDS)}.")
    chosen = set(given)
    return [r for r in REGION_IDS if r in chosen]


def add_rating(
    session: Session,
    *,
    explanation: Explanation,
    rater: User,
    score: int,
    regions: Iterable[str],
    context: bool,
    comment: str | None,
    study: RatingStudy | None,
) -> Rating:
    """Append one rating. In a study: the rater must be a member, the map one of the study's, the study open.

    The caller has checked that the rater may see the map (for ad-hoc ratings: its case).
    """
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise RatingError("invalid_score", "score is a whole number from 1 to 5.")
    clean_regions = check_regions(regions)
    comment = clean_text(comment, limit=MAX_COMMENT)
    if explanation.state != "done":
        raise RatingError("not_ready", "This map is not computed yet.", status_code=409)
    label = None
    blinded = False
    if study is not None:
        require_rater(session, study=study, user=rater)
        if session.get(StudyMap, (study.id, explanation.id)) is None:
            raise NotFound("map in this study")
        if study.is_closed:
            raise RatingError("study_closed", "This study is closed; its ratings can no longer change.", 409)
        blinded = study.blinded
        order = item_order(session, study=study, rater_id=rater.id, case_id=explanation.case_id)
        label = map_label(order.index(explanation.method))
    rating = Rating(
        explanation_id=explanation.id, case_id=explanation.case_id, study_id=study.id if study else None,
        rater_id=rater.id, method=explanation.method, target_id=explanation.target_id, blinded=blinded,
        blinded_label=label, score=score, regions=clean_regions, context=bool(context), comment=comment,
    )
    session.add(rating)
    session.flush()
    return rating


def _scope(query: Any, study_id: str | None) -> Any:
    return query.where(Rating.study_id == study_id if study_id is not None else Rating.study_id.is_(None))


def latest_ratings(session: Session, *, study_id: str | None, rater_id: int | None = None,
                   explanation_ids: Sequence[str] | None = None) -> list[Rating]:
    """The rating that counts per (rater, map) within a study (or among ad-hoc ratings): the newest row."""
    newest = _scope(select(func.max(Rating.id)), study_id)
    if rater_id is not None:
        newest = newest.where(Rating.rater_id == rater_id)
    if explanation_ids is not None:
        newest = newest.where(Rating.explanation_id.in_(list(explanation_ids)))
    newest = newest.group_by(Rating.rater_id, Rating.explanation_id)
    return list(session.scalars(select(Rating).where(Rating.id.in_(newest)).order_by(Rating.id)))


def all_ratings(session: Session, *, study_id: str | None, rater_id: int | None = None) -> list[Rating]:
    query = _scope(select(Rating), study_id)
    if rater_id is not None:
        query = query.where(Rating.rater_id == rater_id)
    return list(session.scalars(query.order_by(Rating.id)))


def rating_out(rating: Rating, *, reveal_method: bool) -> dict[str, Any]:
    """A rating as JSON. Without ``reveal_method`` (a blinded study) neither the method nor the explanation id
    is given: the id is global (case page, other studies, exports) and would name the method."""
    out: dict[str, Any] = {
        "id": rating.id,
        "case_id": rating.case_id,
        "study_id": rating.study_id,
        "rater": rating.rater.username,
        "target_id": rating.target_id,
        "blinded": rating.blinded,
        "blinded_label": rating.blinded_label,
        "score": rating.score,
        "regions": list(rating.regions),
        "context": rating.context,
        "comment": rating.comment,
        "created_at": rating.created_at.isoformat(),
    }
    if reveal_method:
        out["explanation_id"] = rating.explanation_id
        out["method"] = rating.method
    return out


# --- results ----------------------------------------------------------------------------------------------


def points(ratings: Iterable[Rating]) -> list[stats.RatingPoint]:
    return [stats.RatingPoint(rater=r.rater_id, item=r.explanation_id, case=r.case_id, method=r.method,
                              score=r.score, regions=tuple(r.regions), context=r.context) for r in ratings]


def summary(session: Session, *, study: RatingStudy | None, rater_id: int | None = None) -> dict[str, Any]:
    """Per-method statistics of the ratings that count (a study's, or ad-hoc ones), as JSON-ready data."""
    ratings = latest_ratings(session, study_id=study.id if study else None, rater_id=rater_id)
    methods = study_methods(session, study_id=study.id) if study else [m for m in METHODS]
    if study is None:
        present = {r.method for r in ratings}
        methods = [m for m in methods if m in present]
    result = stats.summarise(points(ratings), methods=methods, regions=REGION_IDS).to_dict()
    for entry in result["methods"]:
        info = METHODS.get(entry["method"])
        entry["label"] = info.label if info else entry["method"]
    result["scope"] = "study" if study else "adhoc"
    result["study_id"] = study.id if study else None
    result["regions"] = [{"id": r.id, "name": r.name} for r in REGIONS]
    if study is not None:
        result["study"] = {"name": study.name, "target_rule": study.target_rule, "blinded": study.blinded,
                           "closed": study.is_closed, "cases": len(study_cases(session, study_id=study.id)),
                           "raters": len(study_raters(session, study_id=study.id))}
    return result


# --- CSV export -------------------------------------------------------------------------------------------

CSV_COLUMNS = ("rating_id", "study", "rater", "case", "explanation", "method", "target", "blinded",
               "blinded_label", "score", "regions", "context", "comment", "time")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(value: str) -> str:
    """Text a spreadsheet would run as a formula gets a leading apostrophe (OWASP CSV injection advice).

    A cell that already starts with an apostrophe gets one too, so :func:`csv_uncell` undoes it exactly.
    """
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_uncell(value: str) -> str:
    return value[1:] if value.startswith("'") else value


def csv_text(ratings: Sequence[Rating]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in ratings:
        writer.writerow([
            r.id, r.study_id or "", csv_cell(r.rater.username), r.case_id, r.explanation_id, r.method, r.target_id,
            "1" if r.blinded else "0", r.blinded_label or "", r.score, ";".join(r.regions),
            "1" if r.context else "0", csv_cell(r.comment or ""), _iso(r.created_at),
        ])
    return buffer.getvalue()


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")
