"""Compare page and API: a case against another case, its nearest gallery face of a syndrome, or a centroid."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import cv2
from fastapi import APIRouter, Form, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from app.audit import service as audit
from app.auth.models import User
from app.cases import service as case_service
from app.compare import picker, service
from app.compare.references import gallery_image
from app.errors import DomainError
from app.explain import figure as figure_render
from app.explain.registry import METHODS
from app.explanations.models import Explanation
from app.explanations.service import checked_params, read_map
from app.predictions.service import decode_png, out_of_range, out_of_range_text
from app.predictions.serving import ServedModel, require_model
from app.web.deps import CurrentUser, DbSession, client_ip
from app.web.errors import ApiError
from app.web.jobs import submit_or_fail
from app.web.templating import render

api = APIRouter(tags=["compare"])
pages = APIRouter(include_in_schema=False)

_SPEC = Query(min_length=3, max_length=140, description="case:<id>, gallery:<image id>, nearest:<syndrome id> "
              "or centroid:<syndrome id>")


class CompareBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: str = Field(min_length=3, max_length=140, description="case:<id>, gallery:<image id>, "
                           "nearest:<syndrome id> or centroid:<syndrome id>")
    methods: list[str] | None = Field(default=None, description="method ids; omitted = all ten + decomposition")
    params: dict[str, dict[str, Any]] | None = None


def _compare(request: Request, db: Session, *, user: User, case_id: str, spec: str, methods: list[str] | None,
             params: dict[str, dict[str, Any]] | None, create: bool) -> dict[str, Any]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    model = require_model(request)
    reference = service.resolve_reference(db, user=user, case=case, model=model, spec=spec)
    chosen = service.check_methods(methods)
    checked = checked_params(chosen, params)
    rows, jobs = service.comparison_rows(db, user=user, case=case, model=model, reference=reference,
                                         methods=chosen, params=checked, create=create)
    if create:
        audit.record(db, action="compare", user=user, case_id=case.id, ip=client_ip(request),
                     detail={"reference_kind": reference.kind, "methods": chosen, "model": model.version})
    db.commit()
    for job in jobs:
        submit_or_fail(request, job.id, job.lane)
    value = service.similarity(request.app.state.photo_store, case=case, model=model, reference=reference)
    out = service.comparison_out(case=case, reference=reference, rows=rows, value=value, jobs=[j.id for j in jobs])
    out["model"] = model.version
    return out


@api.post("/api/v1/cases/{case_id}/compare", status_code=202, summary="Similarity maps against a reference (jobs)")
async def create_comparison(case_id: str, body: CompareBody, request: Request, user: CurrentUser,
                            db: DbSession) -> JSONResponse:
    out = await run_in_threadpool(_compare, request, db, user=user, case_id=case_id, spec=body.reference,
                                  methods=body.methods, params=body.params, create=True)
    return JSONResponse(out, status_code=202, headers={"Cache-Control": "no-store"})


@api.get("/api/v1/cases/{case_id}/compare", summary="The similarity and the stored maps of a comparison")
def get_comparison(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                   reference: Annotated[str, _SPEC]) -> JSONResponse:
    out = _compare(request, db, user=user, case_id=case_id, spec=reference, methods=None, params=None, create=False)
    return JSONResponse(out, headers={"Cache-Control": "no-store"})


@api.get("/api/v1/gallery/{image_id}/aligned.png", summary="A synthetic gallery face, re-rendered from its seed",
         response_class=Response)
def gallery_png(image_id: str, request: Request, user: CurrentUser, model: ServedModel) -> Response:
    image = gallery_image(model, image_id[:120], request.app.state.settings.data_dir / "gallery_renders")
    if image.crop is None:
        raise ApiError(404, "no_gallery_image", image.reason)
    _ok, png = cv2.imencode(".png", cv2.cvtColor(image.crop, cv2.COLOR_RGB2BGR))
    return Response(png.tobytes(), media_type="image/png", headers={"Cache-Control": "no-store"})


@api.get("/api/v1/cases/{case_id}/compare/figure.png", summary="The comparison as a figure", response_class=Response)
def compare_figure(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                   reference: Annotated[str, _SPEC]) -> Response:
    out = _compare(request, db, user=user, case_id=case_id, spec=reference, methods=None, params=None, create=False)
    store = request.app.state.photo_store
    case = case_service.get_case(db, user=user, case_id=case_id)
    done = [db.get(Explanation, r["id"]) for r in out["query"] if r["status"] == "done"]
    if not done:
        raise ApiError(409, "not_ready", "No finished maps for this comparison yet.")
    panels = [figure_render.FigurePanel(method_id=row.method, label=METHODS[row.method].label,
                                        values=read_map(store.read(row.map_path)), signed=METHODS[row.method].signed)
              for row in done if row is not None and row.map_path]
    png = figure_render.panel_figure_png(
        decode_png(store.read(case.aligned_path)), panels,
        target_label=f"similarity {out['similarity']:.3f} to {out['reference']['label']}",
        model_version=out["model"], case_label=case.pseudonym or case.id[:8],
        warning=out_of_range_text(ood) if (ood := out_of_range(db, case_id=case.id)) else None)
    return Response(png, media_type="image/png", headers={
        "Content-Disposition": f'attachment; filename="compare-{case.id[:8]}.png"', "Cache-Control": "no-store"})


def _cards(out: dict[str, Any], side: str, base: str) -> list[dict[str, Any]]:
    cards = []
    for item in out.get(side) or []:
        card = {"id": item["id"], "method": item["method"], "label": item["label"], "state": item["status"],
                "error": item["error"], "pending": item["status"] in ("queued", "running"),
                "job_id": item.get("job_id"), "base": base, "signed": item["signed"], "stats": item["stats"] or {},
                "heat": f"/api/v1/explanations/{item['id']}/map.png?view=heat&space=crop",
                "npy": f"/api/v1/explanations/{item['id']}/map.npy",
                "colorbar": f"/api/v1/colorbars/{'signed' if item['signed'] else 'magnitude'}.png"}
        info = METHODS.get(item["method"])
        card["description"] = info.description if info else ""
        cards.append(card)
    return cards


def page_context(request: Request, db: Session, *, user: User, case_id: str, spec: str | None) -> dict[str, Any]:
    case = case_service.get_case(db, user=user, case_id=case_id)
    ctx: dict[str, Any] = {"case": case, "spec": spec or "", "out": None, "error": None,
                           "methods": [{"id": m, "label": i.label} for m, i in METHODS.items()]}
    if spec:
        try:
            out = _compare(request, db, user=user, case_id=case_id, spec=spec, methods=None, params=None,
                           create=False)
        except DomainError as exc:
            if exc.status_code == 404:
                raise
            ctx["error"] = exc.detail
            return ctx
        ctx["out"] = out
        ctx["ood"] = out_of_range(db, case_id=case.id)
        other = out["reference"].get("case_id") if isinstance(out.get("reference"), dict) else None
        ctx["ood_other"] = out_of_range(db, case_id=other) if other else None
        ctx["query_cards"] = _cards(out, "query", out["query_image"])
        ctx["other_cards"] = _cards(out, "other", out["reference"]["image"] or "")
        ctx["pending"] = any(c["pending"] for c in ctx["query_cards"] + ctx["other_cards"])
        ctx["figure_url"] = f"/api/v1/cases/{case.id}/compare/figure.png?reference={quote(spec)}" \
            if any(c["state"] == "done" for c in ctx["query_cards"]) else None
    return ctx


@pages.get("/cases/{case_id}/compare")
def compare_page(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                 reference: Annotated[str | None, Query(max_length=140)] = None) -> Response:
    ctx = page_context(request, db, user=user, case_id=case_id, spec=reference)
    response = render(request, "compare/page.html", ctx)
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.get("/cases/{case_id}/compare/grid")
def compare_grid(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                 reference: Annotated[str, Query(max_length=140)]) -> Response:
    response = render(request, "compare/_grid.html", page_context(request, db, user=user, case_id=case_id,
                                                                  spec=reference))
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.get("/cases/{case_id}/compare/references")
def compare_references(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                       q: Annotated[str, Query(max_length=80)] = "") -> Response:
    """The picker's choices (an htmx fragment): cases by pseudonym or the recent ones, nearest faces, centroids."""
    case = case_service.get_case(db, user=user, case_id=case_id)
    found = picker.choices(db, user=user, case=case, model=require_model(request), q=q)
    response = render(request, "compare/_references.html", {"case": case, "choices": found, "q": q})
    response.headers["Cache-Control"] = "no-store"
    return response


@pages.post("/cases/{case_id}/compare")
async def compare_form(case_id: str, request: Request, user: CurrentUser, db: DbSession,
                       reference: Annotated[str, Form(max_length=140)],
                       methods: Annotated[list[str] | None, Form()] = None) -> Response:
    await run_in_threadpool(_compare, request, db, user=user, case_id=case_id, spec=reference,
                            methods=methods or None, params=None, create=True)
    url = f"/cases/{case_id}/compare?reference={quote(reference)}"
    if "hx-request" not in request.headers:
        return RedirectResponse(url, status_code=303)
    ctx = await run_in_threadpool(page_context, request, db, user=user, case_id=case_id, spec=reference)
    response = render(request, "compare/_grid.html", ctx)
    response.headers["Cache-Control"] = "no-store"
    response.headers["HX-Push-Url"] = url
    return response

