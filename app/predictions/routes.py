"""Re-ranking a case. The GestaltMatcher-service endpoints (``/predict``, ``/encode``, ``/crop``, ``/status``)
live in :mod:`app.predictions.gm_routes`; ``gm_router`` is re-exported here for the app factory."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from app.audit import service as audit
from app.cases import service as case_service
from app.cases.schemas import case_out
from app.predictions.gm_routes import gm_router
from app.predictions.models import PredictionRun
from app.predictions.service import decode_png, rank_crop, references_for, store_run
from app.predictions.serving import require_model
from app.web.deps import CurrentUser, DbSession, client_ip
from app.web.templating import render

router = APIRouter(tags=["predictions"])
__all__ = ["gm_router", "router"]


@router.post("/api/v1/cases/{case_id}/predictions", status_code=201, summary="Rank the case again")
async def rerun_prediction(case_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    case = await run_in_threadpool(case_service.get_case, db, user=user, case_id=case_id)
    model = await run_in_threadpool(require_model, request)  # a load in progress must not hold the loop
    crop = decode_png(request.app.state.photo_store.read(case.aligned_path))
    references = await run_in_threadpool(references_for, db, model, exclude_case=case.id)  # shared cases
    result = await run_in_threadpool(rank_crop, model, crop, references=references)

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
