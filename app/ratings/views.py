"""What the study pages show: list, overview, the blinded rating page, results, and the ad-hoc rating form.

Blinding is decided here, once: a blinded study's rating items carry a label ("A", "B", …) and never the
method — not its id, not its label, not an error message that might name it. Templates only print what
these dictionaries hold.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.auth.models import User
from app.explain.registry import METHODS
from app.explanations.models import Explanation
from app.jobs.models import QUEUED, RUNNING
from app.ratings import service
from app.ratings.models import TARGET_RULES, Rating, RatingStudy, StudyMap
from app.synth.regions import REGIONS

CHART_HEIGHT = 48
BAR_WIDTH = 14
BAR_GAP = 6


def regions_view() -> list[dict[str, Any]]:
    """The region vocabulary with its HPO terms, ready for checkboxes and their tooltips."""
    return [{"id": r.id, "name": r.name, "hpo": [{"id": t.id, "name": t.name} for t in r.hpo],
             "title": "; ".join(f"{t.name} ({t.id})" for t in r.hpo)} for r in REGIONS]


def method_label(method: str) -> str:
    info = METHODS.get(method)
    return info.label if info else method


def study_row(session: Session, study: RatingStudy, user: User,
              states: service.MapStates | None = None) -> dict[str, Any]:
    member = service.is_member(session, study_id=study.id, user_id=user.id)
    mine = service.progress(session, study=study, rater_id=user.id, states=states) if member else None
    return {
        "id": study.id,
        "name": study.name,
        "blinded": study.blinded,
        "closed": study.is_closed,
        "created_at": study.created_at,
        "member": member,
        "progress": mine,
        "results": service.can_see_results(session, study=study, user=user),
    }


def study_context(session: Session, study: RatingStudy, user: User, *, served: service.ModelKey | None = None,
                  retry_error: str | None = None) -> dict[str, Any]:
    """The overview: the rater's own progress; for admins also methods, maps, problems, warnings and every
    rater's progress."""
    cases = service.study_cases(session, study_id=study.id)
    states = service.map_states(session, study_id=study.id, served=served)
    ctx: dict[str, Any] = {
        "study": study_row(session, study, user, states),
        "target_rule": service.TARGET_RULE_LABELS.get(study.target_rule, study.target_rule),
        "n_cases": len(cases),
        "maps": states,
        "admin": user.is_admin,
        "methods": None,
        "raters": None,
        "problems": [],
        "warnings": [],
        "retry_error": retry_error,
    }
    mine = ctx["study"]["progress"]
    if mine is not None:
        resume = mine.first_open(cases)
        ctx["resume_ordinal"] = cases.index(resume) + 1 if resume else None
    if user.is_admin:
        ctx["methods"] = [method_label(m) for m in service.study_methods(session, study_id=study.id)]
        ctx["raters"] = [{"username": r.user.username,
                          "progress": service.progress(session, study=study, rater_id=r.user_id, states=states)}
                         for r in service.study_raters(session, study_id=study.id)]
        ctx["complete"] = bool(ctx["raters"]) and all(r["progress"].complete for r in ctx["raters"])
        ctx["problems"] = service.problem_maps(session, study=study, states=states, served=served)
        ctx["warnings"] = service.blinding_warnings(session, study=study)
    return ctx


def _rating_view(rating: Rating | None) -> dict[str, Any] | None:
    if rating is None:
        return None
    return {"score": rating.score, "regions": set(rating.regions), "context": rating.context,
            "comment": rating.comment or "", "created_at": rating.created_at}


def map_item(study: RatingStudy, pin: StudyMap, row: Explanation, *, label: str, position: int,
             rating: Rating | None) -> dict[str, Any]:
    """One map on the rating page, addressed by (case position, label): never by its explanation id, which is
    global and would name the method elsewhere. In a blinded study: the label only."""
    partial = f"/studies/{study.id}/cases/{position}/maps/{label}"
    api = f"/api/v1/studies/{study.id}/cases/{position}/maps/{label}"
    item = {
        "label": label,
        "state": row.state,
        "pending": row.state in (QUEUED, RUNNING),
        "job_id": row.job_id if row.state in (QUEUED, RUNNING) else None,  # for its wait phrase (never shown)
        "failed": row.state == "failed",
        "partial_url": partial,
        "heat_url": f"{api}/heat.png",
        "rate_url": f"{api}/ratings",
        "aligned_url": f"/api/v1/studies/{study.id}/cases/{position}/aligned.png",
        "rating": _rating_view(rating),
        "blinded": study.blinded,
        "method_label": None,
        "explanation_id": None,
        "error": None,
        "closed": study.is_closed,
        "study_id": study.id,
    }
    if not study.blinded:
        item["method_label"] = method_label(pin.method)
        item["explanation_id"] = row.id
        item["error"] = row.error
    return item


def case_context(session: Session, study: RatingStudy, user: User, position: int) -> dict[str, Any]:
    """The rating page of one case for one rater: maps in the rater's stored order, with their ratings.

    "Case i of n" and previous / next follow the study's cases in order, not arithmetic on positions: a
    position may be missing (a case removed from the study) without breaking the navigation.
    """
    study_case = service.study_case_at(session, study_id=study.id, position=position)
    cases = service.study_cases(session, study_id=study.id)
    index = next(i for i, c in enumerate(cases) if c.position == position)
    order = service.item_order(session, study=study, rater_id=user.id, case_id=study_case.case_id)
    maps = {pin.method: (pin, row) for pin, row in service.study_maps(session, study_id=study.id,
                                                                      case_id=study_case.case_id)}
    mine = {r.explanation_id: r for r in service.latest_ratings(
        session, study_id=study.id, rater_id=user.id, explanation_ids=[row.id for _, row in maps.values()])}
    items = []
    for i, method in enumerate(order):
        if method in maps:
            pin, row = maps[method]
            items.append(map_item(study, pin, row, label=service.map_label(i), position=position,
                                  rating=mine.get(row.id)))
    prog = service.progress(session, study=study, rater_id=user.id)
    n = len(cases)
    prev_case = cases[index - 1] if index > 0 else None
    next_case = cases[index + 1] if index + 1 < n else None
    base = f"/studies/{study.id}"
    return {
        "study": {"id": study.id, "name": study.name, "blinded": study.blinded, "closed": study.is_closed},
        "position": position,
        "ordinal": index + 1,
        "n_cases": n,
        "prev_position": prev_case.position if prev_case else None,
        "next_position": next_case.position if next_case else None,
        "target_name": study_case.target_name,
        "items": items,
        "regions": regions_view(),
        "progress": prog,
        "case_rated": sum(1 for item in items if item["rating"] is not None),
        "prev_url": f"{base}/cases/{prev_case.position}" if prev_case else None,
        "next_url": f"{base}/cases/{next_case.position}" if next_case else base,
        "last": next_case is None,
        "aligned_url": f"/api/v1/studies/{study.id}/cases/{position}/aligned.png",
        "photo_url": f"/api/v1/studies/{study.id}/cases/{position}/photo",
    }


def map_item_context(session: Session, study: RatingStudy, user: User, position: int, label: str) -> dict[str, Any]:
    _, pin, row = service.labelled_map(session, study=study, rater_id=user.id, position=position, label=label)
    mine = service.latest_ratings(session, study_id=study.id, rater_id=user.id, explanation_ids=[row.id])
    item = map_item(study, pin, row, label=label, position=position, rating=mine[-1] if mine else None)
    return {"item": item, "regions": regions_view()}


def _bars(distribution: dict[str, int]) -> list[dict[str, Any]]:
    top = max(distribution.values(), default=0) or 1
    bars = []
    for i, (score, count) in enumerate(distribution.items()):
        height = round(CHART_HEIGHT * count / top, 2)
        bars.append({"score": score, "count": count, "x": i * (BAR_WIDTH + BAR_GAP), "y": CHART_HEIGHT - height,
                     "height": height, "width": BAR_WIDTH, "label_x": i * (BAR_WIDTH + BAR_GAP) + BAR_WIDTH / 2})
    return bars


def results_context(session: Session, study: RatingStudy, user: User) -> dict[str, Any]:
    data = service.summary(session, study=study)
    for entry in data["methods"]:
        entry["bars"] = _bars(entry["distribution"])
    return {
        "study": study_row(session, study, user),
        "target_rule": service.TARGET_RULE_LABELS.get(study.target_rule, study.target_rule),
        "summary": data,
        "chart": {"width": 5 * BAR_WIDTH + 4 * BAR_GAP, "height": CHART_HEIGHT + 14, "base": CHART_HEIGHT},
        "admin": user.is_admin,
        "complete": service.is_complete(session, study=study),
    }


def adhoc_context(session: Session, row: Explanation, user: User, *, saved: bool = False,
                  error: str | None = None) -> dict[str, Any]:
    mine = service.latest_ratings(session, study_id=None, rater_id=user.id, explanation_ids=[row.id])
    return {"explanation_id": row.id, "method_label": method_label(row.method), "target_name": row.target_name,
            "rating": _rating_view(mine[-1] if mine else None), "regions": regions_view(), "saved": saved,
            "error": error, "ready": row.state == "done"}


def new_study_context(session: Session, user: User, *, error: str | None = None,
                      form: dict[str, Any] | None = None) -> dict[str, Any]:
    from sqlalchemy import select

    from app.cases import service as case_service

    cases, total = case_service.list_cases(session, user=user, limit=service.MAX_CASES)
    users = list(session.scalars(select(User).where(User.is_active.is_(True)).order_by(User.username)))
    form = form or {}
    return {
        "cases": [{"id": c.id, "label": c.pseudonym or c.id[:8], "created_at": c.created_at,
                   "predicted": getattr(c, "predicted_syndrome_name", None),
                   "diagnosis": getattr(c, "diagnosis_name", None),
                   "checked": c.id in form.get("cases", ())} for c in cases],
        "more_cases": total > len(cases),
        "methods": [{"id": m.id, "label": m.label, "description": m.description,
                     "checked": m.id in form.get("methods", ())} for m in METHODS.values()],
        "rules": [{"id": rule, "label": service.TARGET_RULE_LABELS[rule],
                   "checked": rule == form.get("target_rule", TARGET_RULES[0])} for rule in TARGET_RULES],
        "users": [{"username": u.username, "role": u.role, "checked": u.username in form.get("raters", ())}
                  for u in users],
        "name": form.get("name", ""),
        "blinded": form.get("blinded", True),
        "error": error,
    }
