"""Re-ranking a case, and the GestaltMatcher-service endpoints (`POST /predict`, `GET /status`) that let
existing GestaltMatcher clients use GestaltLens unchanged. Those two never store a case."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.audit import service as audit
from app.cases import service as case_service
from app.cases.schemas import case_out
from app.nets.registry import LoadedModel
from app.predictions.models import PredictionRun
from app.predictions.provider import ModelUnavailable
from app.predictions.service import decode_png, rank_crop, store_run
from app.predictions.serving import provider
from app.vision.errors import IntakeError
from app.vision.pipeline import process_photo
from app.web.deps import AppSettings, CurrentUser, DbSession, client_ip
from app.web.errors import ApiError
from app.web.templating import render

router = APIRouter(tags=["predictions"])
gm_router = APIRouter(tags=["gestaltmatcher-compatible"])


def _model_or_503(request: Request) -> LoadedModel:
    try:
        return provider(request).get()
    except ModelUnavailable as exc:
        raise ApiError(503, "model_unavailable", str(exc)) from exc


@router.post("/api/v1/cases/{case_id}/predictions", status_code=201, summary="Rank the case again")
async def rerun_prediction(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = await run_in_threadpool(case_service.get_case, db, user=user, case_id=case_id)
    model = _model_or_503(request)
    crop = decode_png(request.app.state.photo_store.read(case.aligned_path))
    result = await run_in_threadpool(rank_crop, model, crop)

    def _save() -> PredictionRun:
        run = store_run(db, case=case, model=model, result=result)
        audit.record(db, action="predict", user=user, case_id=case.id, ip=client_ip(request),
                     detail={"model": model.version})
        db.commit()
        return run

    run = await run_in_threadpool(_save)
    data = case_out(case, run, model.version)
    if "hx-request" in request.headers:
        return render(request, "cases/_ranking.html", {"case": case, "data": data, "model_problem": None}, 201)
    return JSONResponse(
        {"prediction": data.prediction.model_dump(mode="json") if data.prediction else None,
         "predictions": data.predictions},
        status_code=201,
    )


class GmPredictRequest(BaseModel):
    img: str = Field(description="base64 of the photo file (JPEG, PNG, WebP or HEIC)")


def _gm_error(status: int, message: str, code: str) -> JSONResponse:
    return JSONResponse({"message": message, "detail": message, "code": code}, status_code=status)


@gm_router.post("/predict", summary="GestaltMatcher-service shape: rank a base64 photo (nothing is stored)")
async def gm_predict(body: GmPredictRequest, request: Request, user: CurrentUser, settings: AppSettings) -> Response:
    try:
        data = base64.b64decode(body.img, validate=True)
    except (binascii.Error, ValueError):
        return _gm_error(400, "img is not valid base64", "invalid_base64")
    if len(data) > settings.max_upload_bytes:
        return _gm_error(413, f"The photo is larger than {settings.max_upload_mb:.0f} MB.", "too_large")
    try:
        model = _model_or_503(request)
    except ApiError as exc:
        return _gm_error(exc.status_code, exc.detail, exc.code)
    try:
        processed = await run_in_threadpool(
            process_photo, data, max_pixels=settings.max_pixels, detector=request.app.state.detector
        )
    except IntakeError as exc:
        return _gm_error(exc.status_code, exc.detail, exc.code)
    result = await run_in_threadpool(rank_crop, model, processed.aligned.crop, top_k=len(model.labels))
    syndromes: list[dict[str, Any]] = []
    for p in result.ranked:
        distance = None if p.distance is None else round(float(p.distance), 4)
        syndromes.append({
            "syndrome_name": p.name,
            "omim_id": p.omim or "",
            "distance": distance,
            # GestaltMatcher reports the gestalt score as the distance itself; without a gallery the
            # softmax probability is the only score there is.
            "gestalt_score": distance if distance is not None else round(float(p.score), 4),
            "image_id": p.image_id or "",
            "subject_id": p.image_id or "",
        })
    return JSONResponse({
        "model_version": model.card.version,
        "gallery_version": model.card.version if model.gallery is not None else "",
        "suggested_syndromes_list": syndromes,
        # The demo model's synthetic syndromes have no genes; real GM galleries would fill this list.
        "suggested_genes_list": [],
    })


@gm_router.get("/status", summary="GestaltMatcher-service shape: service and model status (no auth)")
def gm_status(request: Request) -> dict[str, Any]:
    try:
        model = provider(request).get()
    except ModelUnavailable as exc:
        return {"status": "degraded", "message": str(exc), "model_version": "", "gallery_version": ""}
    return {
        "status": "running",
        "model_id": model.card.id,
        "model_version": model.card.version,
        "gallery_version": model.card.version if model.gallery is not None else "",
    }
