"""The GestaltMatcher-Arc service's routes — ``POST /predict``, ``/encode``, ``/crop`` and ``GET /status`` —
so that a lab's existing clients and pipelines (the service's ``send_image_api.py`` and ``test_api.py``)
work against GestaltLens unchanged apart from host, port and credentials. Nothing here stores anything.

The service's own habits are kept on these routes only, because its clients rely on them:

* a photo it cannot align answers **status 200** with ``{"message": "Face alignment error."}`` on
  ``/predict`` (``send_image_api.py`` writes that body to its output file). We add our ``detail`` and
  ``code`` beside ``message`` so a new client can still tell *why*;
* several faces: the most confident face is used (the service's clients have no way to choose);
* ``/encode`` and ``/crop`` have no error answer in the service (an unaligned photo crashes it with a
  plain-text 500); here they answer **422** ``{"message", "detail", "code"}``;
* not valid base64: the service crashes (500); here **400** ``invalid_base64`` with a message.

Unlike the service, every route except ``GET /status`` needs authentication (HTTP Basic with a
GestaltLens user, as the service's clients send, or a Bearer token). Our own ``/api/v1`` is untouched.
"""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.nets.ensemble import ALL_AUGMENTATIONS, encode_views
from app.nets.registry import LoadedModel
from app.predictions import gm_format
from app.predictions.provider import ModelUnavailable
from app.predictions.service import inference_lock, rank_crop
from app.predictions.serving import provider
from app.settings import Settings
from app.vision.errors import IntakeError
from app.vision.pipeline import ProcessedPhoto, process_photo
from app.web.deps import AppSettings, CurrentUser

gm_router = APIRouter(tags=["gestaltmatcher-compatible"])

ALIGNMENT_ERROR = "Face alignment error."  # the service's exact words; its clients compare them
_NO_STORE = {"Cache-Control": "no-store"}


class GmImage(BaseModel):
    img: str = Field(description="base64 of the photo file (JPEG, PNG, WebP, HEIC, BMP or TIFF); line breaks are fine")


class GmFailure(Exception):
    """An answer that ends the request early: status and the service-shaped body."""

    def __init__(self, status: int, message: str, code: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"message": message, "detail": detail or message, "code": code}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=_NO_STORE)


def _model(request: Request) -> LoadedModel:
    try:
        return provider(request).get()
    except ModelUnavailable as exc:
        raise GmFailure(503, str(exc), "model_unavailable") from exc


async def _aligned(body: GmImage, request: Request, settings: Settings, *, alignment_status: int) -> ProcessedPhoto:
    """Decode and align the most confident face, or raise GmFailure in the route's error shape."""
    try:
        data = gm_format.decode_image_field(body.img)
    except gm_format.InvalidBase64 as exc:
        raise GmFailure(400, str(exc), "invalid_base64") from exc
    if len(data) > settings.max_upload_bytes:
        raise GmFailure(413, f"The photo is larger than {settings.max_upload_mb:.0f} MB.", "too_large")
    try:
        return await run_in_threadpool(process_photo, data, max_pixels=settings.max_pixels,
                                       detector=request.app.state.detector, most_confident=True)
    except IntakeError as exc:
        if exc.status_code == 413:  # our size limits, not an alignment problem
            raise GmFailure(413, exc.detail, exc.code) from exc
        raise GmFailure(alignment_status, ALIGNMENT_ERROR, exc.code, exc.detail) from exc


def _json(data: dict[str, Any]) -> JSONResponse:
    return JSONResponse(data, headers=_NO_STORE)


def gallery_version(model: LoadedModel) -> str:
    """The card's ``gallery_version`` when it gives one (GMDB's are dates), else the model's version."""
    if model.gallery is None:
        return ""
    return str(model.card.extra.get("gallery_version") or model.card.version)


@gm_router.post("/predict", summary="GestaltMatcher-service shape: rank a base64 photo (nothing is stored)")
async def gm_predict(body: GmImage, request: Request, user: CurrentUser, settings: AppSettings) -> Response:
    try:
        model = await run_in_threadpool(_model, request)  # a load in progress must not hold the event loop
        processed = await _aligned(body, request, settings, alignment_status=200)
    except GmFailure as failure:
        return failure.response()
    result = await run_in_threadpool(rank_crop, model, processed.aligned.crop, top_k=max(1, len(model.syndromes)))
    return _json({
        "model_version": model.card.version,
        "gallery_version": gallery_version(model),
        "suggested_genes_list": gm_format.gene_entries(result.ranked, model.syndromes),
        "suggested_syndromes_list": gm_format.syndrome_entries(result.ranked),
        # GestaltLens's own optional siblings (GM clients ignore unknown keys): what ordered the lists
        # ("gallery": distances; "softmax": the head, distances null; "none": a headless net without a gallery)
        "ranked_by": result.ranking,
        # is the face out of range?
        "out_of_distribution": result.out_of_distribution.to_json() if result.out_of_distribution else None,
    })


def _encode_all(model: LoadedModel, crop: np.ndarray) -> list[Any]:
    with inference_lock():
        return encode_views(model.ensemble, crop, ALL_AUGMENTATIONS)


@gm_router.post("/encode", summary="GestaltMatcher-service shape: per-model, per-augmentation encodings")
async def gm_encode(body: GmImage, request: Request, user: CurrentUser, settings: AppSettings) -> Response:
    """Every member × flip × grey, as the service's ``/encode`` (which always encodes all four views)."""
    try:
        model = await run_in_threadpool(_model, request)  # a load in progress must not hold the event loop
        processed = await _aligned(body, request, settings, alignment_status=422)
    except GmFailure as failure:
        return failure.response()
    views = await run_in_threadpool(_encode_all, model, processed.aligned.crop)
    return _json({"encodings": gm_format.encodings_frame(views)})


@gm_router.post("/crop", summary="GestaltMatcher-service shape: the aligned 112×112 crop as base64 PNG")
async def gm_crop(body: GmImage, request: Request, user: CurrentUser, settings: AppSettings) -> Response:
    try:
        processed = await _aligned(body, request, settings, alignment_status=422)
    except GmFailure as failure:
        return failure.response()
    ok, png = cv2.imencode(".png", cv2.cvtColor(processed.aligned.crop, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV encodes any 112x112 uint8 image
        return GmFailure(500, "The crop could not be encoded.", "internal_error").response()
    return _json({"crop": base64.b64encode(png.tobytes()).decode("ascii")})


@gm_router.get("/status", summary="GestaltMatcher-service shape: service and model status (no auth)")
def gm_status(request: Request) -> dict[str, Any]:
    """The service answers ``{"status": "running"}``; the model fields are ours, added beside it. While the model is
    being read (start-up preload: a large gallery takes most of a minute) it answers ``loading`` at once instead of
    holding the caller until the read ends."""
    models = provider(request)
    if models.state() == "loading":
        return {"status": "loading", "message": "The model is being read; ranking requests wait for it.",
                "model_version": "", "gallery_version": ""}
    try:
        model = models.get()
    except ModelUnavailable as exc:
        return {"status": "degraded", "message": str(exc), "model_version": "", "gallery_version": ""}
    return {
        "status": "running",
        "model_id": model.card.id,
        "model_version": model.card.version,
        "gallery_version": gallery_version(model),
        "members": len(model.ensemble),
        "views": model.views,
    }
