"""JSON shapes of the cases API (the HTTP contract in shared/DESIGN.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy.orm import object_session

from app.cases.models import Case
from app.diagnoses.models import Diagnosis
from app.diagnoses.service import current_diagnosis
from app.phenotypes.service import terms_for_cases
from app.predictions.models import PredictionRun
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


class PredictionInfo(BaseModel):
    model_id: str
    model_version: str
    ranked_by: str
    created_at: datetime
    current: bool


class DiagnosisOut(BaseModel):
    id: int
    source: str  # "model_label" | "free_text"
    syndrome_id: str | None  # a label id of `model` (source "model_label")
    name: str
    omim: str | None  # "OMIM:123456"
    model: str | None  # "id@version" whose labels were chosen from
    confirmed_by: str | None
    confirmed_at: datetime


class CaseOut(BaseModel):
    id: str
    pseudonym: str | None
    created_at: datetime
    owner: str
    face: FaceOut
    alignment: AlignmentOut
    photo: PhotoOut
    predictions: list[dict[str, object]]
    prediction: PredictionInfo | None
    # is the face far from everything the model has seen? (app.nets.ood; null without a calibrated model)
    out_of_distribution: dict[str, Any] | None = None
    diagnosis: DiagnosisOut | None
    phenotype: list[dict[str, str]] = []  # HPO terms [{id, name}] present in the patient (app.phenotypes)
    # single-case reads: face-only, phenotype-only and combined rankings with term contributions
    # (app.phenotypes.ranking; null in lists)
    phenotype_ranking: dict[str, Any] | None = None
    urls: CaseUrls


class CaseList(BaseModel):
    items: list[CaseOut]
    total: int
    limit: int
    offset: int


_LOOK_UP: Any = object()


def diagnosis_out(row: Diagnosis | None) -> DiagnosisOut | None:
    if row is None or row.is_cleared:
        return None
    return DiagnosisOut(
        id=row.id,
        source=row.source,
        syndrome_id=row.syndrome_id,
        name=row.name or "",
        omim=f"OMIM:{row.omim}" if row.omim else None,
        model=row.model,
        confirmed_by=row.confirmer.username if row.confirmer else None,
        confirmed_at=row.created_at,
    )


def case_out(
    case: Case,
    run: PredictionRun | None = None,
    served_version: str | None = None,
    diagnosis: Diagnosis | None = _LOOK_UP,
    phenotype: list[dict[str, str]] | None = _LOOK_UP,
) -> CaseOut:
    """The case JSON. ``run`` is the newest ranking; ``served_version`` marks whether it is from the model
    served now (a ranking by an older model is still shown, flagged as not current). ``diagnosis`` is the
    current confirmed diagnosis; lists pass it (fetched for the whole page), otherwise it is looked up."""
    if diagnosis is _LOOK_UP:
        session = object_session(case)
        diagnosis = current_diagnosis(session, case_id=case.id) if session is not None else None
    if phenotype is _LOOK_UP:
        session = object_session(case)
        phenotype = terms_for_cases(session, case_ids=[case.id]).get(case.id, []) if session is not None else []
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
        predictions=run.ranked if run else [],
        prediction=PredictionInfo(
            model_id=run.model_id,
            model_version=run.model_version,
            ranked_by=run.ranked_by,
            created_at=run.created_at,
            current=served_version == f"{run.model_id}@{run.model_version}",
        )
        if run
        else None,
        out_of_distribution=run.out_of_distribution if run else None,
        diagnosis=diagnosis_out(diagnosis),
        phenotype=phenotype or [],
        urls=CaseUrls(self=base, page=f"/cases/{case.id}", image=f"{base}/image", aligned=f"{base}/aligned"),
    )
