"""Attention studies over HTTP: creation and closing (admins), the members' overview, viewer and photo, the
recorded viewings, and the study's fixations as CSV. Access is the shared framework's (app/studies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt
from sqlalchemy import select

from app.cases.models import Case
from app.gaze import attention, results
from app.gaze.models import GROUP_LABELS, STANDARD_GROUPS
from app.studies import access, lifecycle
from app.studies.models import ATTENTION
from app.web.deps import AdminUser, CurrentUser, DbSession, client_ip
from app.web.templating import render

api = APIRouter(tags=["attention studies"])
pages = APIRouter(include_in_schema=False)

NO_STORE = {"Cache-Control": "private, no-store"}
Position = Annotated[int, Path(ge=1, le=100_000, description="the case's position in the study (1-based)")]


class AttentionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=access.MAX_NAME)
    cases: list[str] = Field(max_length=access.MAX_CASES)
    participants: list[str] = Field(max_length=200, description="usernames of the members")
    group: str = Field(max_length=40, description=f"the members' group: {', '.join(STANDARD_GROUPS)} or a lab's")
    viewer: str = Field(default="window", description="window (sharp window follows the pointer) or bubbles")
    seconds: StrictInt = Field(default=10, ge=attention.MIN_SECONDS, le=attention.MAX_SECONDS)


class ViewingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[list[StrictFloat | StrictInt]] = Field(default_factory=list, max_length=attention.MAX_SAMPLES,
                                                         description="[t_ms, x, y] of the window, photo pixels")
    clicks: list[list[StrictFloat | StrictInt]] = Field(default_factory=list, max_length=2000,
                                                        description="[t_ms, x, y] of revealed bubbles")


def _study(db: DbSession, study_id: str, user: CurrentUser):  # type: ignore[no-untyped-def]
    return access.get_study(db, study_id=study_id, user=user, kind=ATTENTION)


def _create(db: DbSession, admin: AdminUser, body: attention.AttentionRequest, ip: str) -> str:
    study = attention.create(db, admin=admin, body=body, ip=ip)
    db.commit()
    return study.id


@api.post("/api/v1/attention-studies", status_code=201, summary="Create an attention study")
def create_study(body: AttentionBody, request: Request, user: AdminUser, db: DbSession) -> JSONResponse:
    study_id = _create(db, user, attention.AttentionRequest(
        name=body.name, case_ids=body.cases, participants=body.participants, group=body.group, viewer=body.viewer,
        seconds=body.seconds), client_ip(request))
    study = _study(db, study_id, user)
    return JSONResponse(attention.study_out(db, study=study, user=user), status_code=201, headers=NO_STORE)


@api.get("/api/v1/attention-studies/{study_id}", summary="An attention study, with your progress")
def get_study(study_id: str, user: CurrentUser, db: DbSession) -> JSONResponse:
    return JSONResponse(attention.study_out(db, study=_study(db, study_id, user), user=user), headers=NO_STORE)


@api.post("/api/v1/attention-studies/{study_id}/close", summary="Close the study (no more viewings)")
def close(study_id: str, request: Request, user: AdminUser, db: DbSession) -> JSONResponse:
    study = _study(db, study_id, user)
    lifecycle.close_study(db, study=study, user=user, ip=client_ip(request))
    db.commit()
    return JSONResponse(attention.study_out(db, study=study, user=user), headers=NO_STORE)


@api.get("/api/v1/attention-studies/{study_id}/cases/{position}/photo", response_class=Response,
         summary="The de-identified photo of a study case, for the viewer")
def photo(study_id: str, position: Position, request: Request, user: CurrentUser, db: DbSession) -> Response:
    study = _study(db, study_id, user)
    if not user.is_admin:
        access.require_member(db, study=study, user=user)
    case = db.get(Case, access.study_case_at(db, study_id=study.id, position=position).case_id)
    assert case is not None
    return Response(request.app.state.photo_store.read(case.photo_path), media_type=case.photo_media_type,
                    headers=NO_STORE)


@api.post("/api/v1/attention-studies/{study_id}/cases/{position}/viewing", status_code=201,
          summary="Record one viewing (window samples or bubble clicks) as pseudo-fixations")
def viewing(study_id: str, position: Position, body: ViewingBody, request: Request, user: CurrentUser,
            db: DbSession) -> JSONResponse:
    study = _study(db, study_id, user)
    row = attention.record_viewing(db, study=study, user=user, position=position, samples=body.samples,
                                   clicks=body.clicks, ip=client_ip(request))
    db.commit()
    mine = attention.progress(db, study=study, user_id=user.id)
    following = mine.first_open_position(attention.member_cases(db, study=study, user_id=user.id))
    return JSONResponse({"fixations": row.fixations, "progress": mine.to_dict(),
                         "next_url": f"/attention/{study.id}/cases/{following}" if following else
                         f"/attention/{study.id}"}, status_code=201, headers=NO_STORE)


@api.get("/api/v1/attention-studies/{study_id}/fixations.csv", summary="The study's pseudo-fixations as CSV")
def study_csv(study_id: str, user: CurrentUser, db: DbSession) -> Response:
    study = _study(db, study_id, user)
    access.require_results(db, study=study, user=user)
    return Response(results.fixations_csv(db, study_id=study.id), media_type="text/csv; charset=utf-8", headers={
        **NO_STORE, "Content-Disposition": f'attachment; filename="attention-{study.id}.csv"'})


# --- pages ------------------------------------------------------------------------------------------------


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "private, no-store"
    return response


@pages.get("/attention")
def list_page(request: Request, user: CurrentUser, db: DbSession) -> Response:
    studies = [attention.study_out(db, study=s, user=user)
               for s in access.studies_for(db, user=user, kind=ATTENTION)]
    cases = list(db.scalars(select(Case).order_by(Case.created_at.desc()).limit(200))) if user.is_admin else []
    return _no_store(render(request, "gaze/attention_list.html", {
        "studies": studies, "cases": cases, "groups": STANDARD_GROUPS, "group_labels": GROUP_LABELS,
        "viewers": attention.VIEWERS}))


@pages.post("/attention")
def create_page(request: Request, user: AdminUser, db: DbSession, name: Annotated[str, Form(max_length=200)],
                cases: Annotated[list[str], Form()], participants: Annotated[str, Form(max_length=4000)],
                group: Annotated[str, Form(max_length=40)], viewer: Annotated[str, Form(max_length=10)] = "window",
                seconds: Annotated[int, Form(ge=attention.MIN_SECONDS, le=attention.MAX_SECONDS)] = 10) -> Response:
    names = [n.strip() for n in participants.replace("\n", ",").split(",") if n.strip()]
    study_id = _create(db, user, attention.AttentionRequest(name=name, case_ids=cases, participants=names,
                                                            group=group, viewer=viewer, seconds=seconds),
                       client_ip(request))
    return Response(status_code=204, headers={"HX-Redirect": f"/attention/{study_id}"})


@pages.get("/attention/{study_id}")
def study_page(study_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    study = _study(db, study_id, user)
    info = attention.study_out(db, study=study, user=user)
    return _no_store(render(request, "gaze/attention_study.html", {"study": study, "info": info}))


@pages.get("/attention/{study_id}/cases/{position}")
def view_page(study_id: str, position: Position, request: Request, user: CurrentUser, db: DbSession) -> Response:
    study = _study(db, study_id, user)
    access.require_member(db, study=study, user=user)
    study_case = access.study_case_at(db, study_id=study.id, position=position)
    cases = attention.member_cases(db, study=study, user_id=user.id)
    ordinal = next(i for i, c in enumerate(cases, start=1) if c.position == position)
    mine = attention.progress(db, study=study, user_id=user.id)
    done = mine.per_case.get(study_case.case_id, 0) > 0
    case = db.get(Case, study_case.case_id)
    return _no_store(render(request, "gaze/attention_view.html", {
        "study": study, "settings": study.settings or {}, "position": position, "ordinal": ordinal,
        "n_cases": len(cases),
        "progress": mine, "done": done, "case": case,
        "photo_url": f"/api/v1/attention-studies/{study.id}/cases/{position}/photo"}))
