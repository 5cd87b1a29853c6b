"""JSON shapes of the cases API (the HTTP contract in shared/DESIGN.md)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pydantic import BaseModel

from app.cases.models import Case
from app.vision.align import ARCFACE_TEMPLATE
from app.vision.geometry import apply_matrix


class FaceOut(BaseModel):
    box: list[float]
    landmarks: list[list[float]]
    score: float
    index: int
    count: int


class AlignmentOut(BaseModel):
    size: int
    matrix: list[list[float]]
    landmarks: list[list[float]]
    residual_px: float
    template: list[list[float]]


class PhotoOut(BaseModel):
    width: int
    height: int
    sha256: str
    media_type: str
    source_format: str


class CaseUrls(BaseModel):
    self: str
    page: str
    image: str
    aligned: str


class CaseOut(BaseModel):
    id: str
    pseudonym: str | None
    created_at: datetime
    owner: str
    face: FaceOut
    alignment: AlignmentOut
    photo: PhotoOut
    predictions: list[dict[str, object]]
    urls: CaseUrls


class CaseList(BaseModel):
    items: list[CaseOut]
    total: int
    limit: int
    offset: int


def case_out(case: Case) -> CaseOut:
    base = f"/api/v1/cases/{case.id}"
    return CaseOut(
        id=case.id,
        pseudonym=case.pseudonym,
        created_at=case.created_at,
        owner=case.owner.username,
        face=FaceOut(
            box=case.face_box,
            landmarks=case.landmarks,
            score=case.detector_score,
            index=case.face_index,
            count=case.face_count,
        ),
        alignment=AlignmentOut(
            size=112,
            matrix=case.align_matrix,
            landmarks=apply_matrix(np.asarray(case.align_matrix), np.asarray(case.landmarks)).round(3).tolist(),
            residual_px=case.align_residual,
            template=ARCFACE_TEMPLATE.tolist(),
        ),
        photo=PhotoOut(
            width=case.photo_width,
            height=case.photo_height,
            sha256=case.photo_sha256,
            media_type=case.photo_media_type,
            source_format=case.source_format,
        ),
        # Syndrome ranking arrives with the model registry (issue 3); until a model ranks the case the
        # list is empty rather than invented.
        predictions=[],
        urls=CaseUrls(self=base, page=f"/cases/{case.id}", image=f"{base}/image", aligned=f"{base}/aligned"),
    )
