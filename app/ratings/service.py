"""Rating studies and ratings: the rating task on the shared study framework (``app.studies``).

Membership, access, per-rater orders, progress, closing, blinding warnings and CSV plumbing live in
``app.studies`` (shared with attention studies); the study's maps live in ``app.ratings.maps``. This module
creates rating studies and holds the append-only ratings and their read-outs. The framework's names are
re-exported here so the rating routes and views keep one import.

Service functions take keyword arguments and a session and never commit: routes own the transaction.
Access rules (see ``app.studies.access``), plus one of ratings:

* ad-hoc ratings (``study_id`` NULL) follow the case: whoever may see the map may rate it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases.models import Case
from app.cases.storage import PhotoStore
from app.errors import DomainError, NotFound
from app.explain.registry import METHODS, require_methods
from app.explanations import service as explanation_service
from app.explanations.models import Explanation
from app.jobs.models import DONE, Job
from app.nets.registry import LoadedModel
from app.predictions.service import decode_png, latest_run, rank_crop, store_run
from app.ratings import stats
from app.ratings.maps import (
    MapStates,
    ModelKey,
    Retry,
    item_order,
    labelled_map,
    map_states,
    problem_maps,
    retry_maps,
    study_map,
    study_maps,
    study_methods,
    unavailable_detail,
)
from app.ratings.models import CONFIRMED, TARGET_RULES, TOP1, Rating, StudyMap, StudyMethod
from app.studies import access, lifecycle
from app.studies.access import (
    MAX_CASES,
    MAX_NAME,
    StudyError,
    can_see_results,
    case_in_study,
    case_label,
    clean_text,
    is_member,
    require_member,
    require_results,
    study_case_at,
    study_cases,
    study_raters,
)
from app.studies.blinding import blinding_warnings
from app.studies.export import csv_cell, csv_table, csv_uncell, iso
from app.studies.lifecycle import close_study
from app.studies.models import RATING, RatingStudy, StudyCase
from app.studies.order import draw_order, map_label
from app.studies.progress import Progress, all_complete
from app.synth.regions import REGION_IDS, REGIONS

__all__ = [
    "MAX_CASES", "MAX_COMMENT", "MAX_NAME", "TARGET_RULE_LABELS", "MapStates", "ModelKey", "Progress", "RatingError",
    "Retry", "StudyRequest", "add_rating", "all_ratings", "blinding_warnings", "can_see_results", "case_in_study",
    "case_label", "check_regions", "clean_text", "close_study", "create_study", "csv_cell", "csv_text",
    "csv_uncell", "delete_study", "draw_order", "get_study", "is_complete", "is_member", "item_order",
    "labelled_map", "latest_ratings", "map_label", "map_states", "points", "problem_maps", "progress",
    "rating_out", "require_rater", "require_results", "resolve_target", "retry_maps", "studies_for",
    "study_case_at", "study_cases", "study_map", "study_maps", "study_methods", "study_raters", "summary",
    "unavailable_detail",
]

MAX_COMMENT = 2000

TARGET_RULE_LABELS = {TOP1: "top-1 syndrome of the model's ranking", CONFIRMED: "confirmed diagnosis"}

RatingError = StudyError  # bad input for a study or a rating: the API answers 422 with this code
require_rater = require_member


def get_study(session: Session, *, study_id: str, user: User) -> RatingStudy:
    """A rating study ``user`` may see (attention studies do not exist here: 404)."""
    return access.get_study(session, study_id=study_id, user=user, kind=RATING)


def studies_for(session: Session, *, user: User) -> list[RatingStudy]:
    return access.studies_for(session, user=user, kind=RATING)


# --- progress ---------------------------------------------------------------------------------------------


def progress(session: Session, *, study: RatingStudy, rater_id: int, states: MapStates | None = None) -> Progress:
    """One rater's progress: maps rated at least once, out of the computed ones (the maps still being computed
    are pending; failed and unavailable ones do not count)."""
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
    members = [r.user_id for r in study_raters(session, study_id=study.id)]
    return all_complete(members, lambda rater_id: progress(session, study=study, rater_id=rater_id, states=states))


# --- creating studies -------------------------------------------------------------------------------------


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
        except DomainError as exc:
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
    cases = lifecycle.check_cases(session, admin=admin, case_ids=body.case_ids)
    if not body.methods:
        raise RatingError("no_methods", "Choose at least one method.")
    require_methods(body.methods)
    raters = lifecycle.check_members(session, usernames=body.raters)
    if body.blinded:
        refuse_own_cases(raters, cases)
    return name, cases, raters


def refuse_own_cases(raters: Sequence[User], cases: Sequence[Case]) -> None:
    """Blinding against a rater who owns a case: a blinded study never asks anyone to rate their own case.

    Why refuse rather than hide: the owner's case page shows the same maps under their method names (the
    study's image and the owner's correlate 1.000), so the owner's answers for that case cannot be blind;
    withholding a clinician's own maps from them while a study runs would break their clinical use of the
    case instead. Admins are not refused (they manage the study and can open every case page); the admin's
    study page warns about them (:func:`app.studies.blinding.blinding_warnings`)."""
    owned: dict[str, list[str]] = {}
    for rater in raters:
        if rater.is_admin:
            continue
        for case in cases:
            if case.owner_id == rater.id:
                owned.setdefault(rater.username, []).append(case_label(case, case.id))
    if owned:
        who = "; ".join(f"{name} owns {', '.join(labels[:10])}" for name, labels in owned.items())
        raise RatingError("rater_owns_case", f"A blinded study cannot ask raters to rate their own cases ({who}): "
                          "their case pages show the same maps with method names. Leave those cases or raters "
                          "out, or make the study unblinded.", owners=owned)


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
    lifecycle.add_members(session, study=study, users=raters, cases=cases,
                          items=lambda rater, case: draw_order(methods, seed=study.seed, rater_id=rater.id,
                                                               case_id=case.id))
    audit.record(session, action="study_create", user=admin, ip=ip,
                 detail={"study": study.id, "cases": len(cases), "methods": methods, "target_rule": study.target_rule,
                         "raters": [r.username for r in raters], "blinded": study.blinded})
    session.flush()
    return study, jobs


def delete_study(session: Session, *, study: RatingStudy, user: User, ip: str | None = None) -> int:
    """Delete a study with its cases list, maps, orders and ratings (the database cascades); the maps
    themselves stay with their cases. Returns how many ratings went with it. The caller commits."""
    ratings = session.scalar(select(func.count()).select_from(Rating).where(Rating.study_id == study.id)) or 0
    lifecycle.delete_study(session, study=study, user=user, ip=ip, counts={"ratings": ratings})
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
    comment = clean_text(comment, limit=MAX_COMMENT, multiline=True)
    if explanation.state != "done":
        raise RatingError("not_ready", "This map is not computed yet.", status=409)
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
    is given: the id is global (case page, other studies, exports) and would name the method. Nor the case id:
    the case is another clinician's, and a rater knows it by its position in the study."""
    out: dict[str, Any] = {
        "id": rating.id,
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
        out["case_id"] = rating.case_id
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


def csv_text(ratings: Sequence[Rating]) -> str:
    return csv_table(CSV_COLUMNS, ([
        r.id, r.study_id or "", csv_cell(r.rater.username), r.case_id, r.explanation_id, r.method, r.target_id,
        "1" if r.blinded else "0", r.blinded_label or "", r.score, ";".join(r.regions),
        "1" if r.context else "0", csv_cell(r.comment or ""), iso(r.created_at),
    ] for r in ratings))
