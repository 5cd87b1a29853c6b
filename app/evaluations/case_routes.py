"""A case's map, measured: its deletion curves (MoRF and LeRF) and where its attribution lies (face vs context).

One click away on every finished logit map of the case page. The curves need 2 × 11 forward passes of the
served network (about 0.1 s for the demo model on 2 cores), light enough for a request like the ranking is;
results are cached per map. Patient data: every answer is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.cases.models import Case
from app.errors import DomainError
from app.evaluate import context as context_metrics
from app.evaluate import faithfulness
from app.explain.engine import prepare_input
from app.explanations import service as explanation_service
from app.jobs.models import DONE
from app.predictions.service import decode_png
from app.predictions.serving import require_model
from app.web.deps import CurrentUser, DbSession
from app.web.errors import ApiError
from app.web.templating import render

api = APIRouter(tags=["explanations"])
pages = APIRouter(include_in_schema=False)

FRACTIONS = tuple(round(i / 10, 1) for i in range(11))
_cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
_lock = threading.Lock()
NO_STORE = {"Cache-Control": "no-store"}


def measure(request: Request, db: Any, user: Any, explanation_id: str) -> dict[str, Any]:
    row = explanation_service.get_explanation_for(db, explanation_id=explanation_id[:32], user=user)
    if row is None:
        raise ApiError(404, "not_found", "No such explanation.")
    if row.state != DONE or not row.map_path:
        raise ApiError(409, "not_ready", "The map is not finished.")
    with _lock:
        if row.id in _cache:
            return _cache[row.id]
    model = require_model(request)
    if (model.card.id, model.card.version) != (row.model_id, row.model_version) or row.objective != "logit" \
            or row.subject:
        raise ApiError(409, "maps_unavailable", "Deletion curves are measured for logit maps of the served model "
                       f"({model.version}); this map is of {row.model_id}@{row.model_version} ({row.objective}).")
    store = request.app.state.photo_store
    case = db.get(Case, row.case_id)
    values = explanation_service.read_map(store.read(row.map_path))
    image = prepare_input(decode_png(store.read(case.aligned_path)))[0].numpy()
    target = row.target_index

    def score(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.network(torch.from_numpy(batch))[0][:, target].numpy()

    morf = faithfulness.deletion_curve(score, image, values, FRACTIONS)
    lerf = faithfulness.deletion_curve(score, image, values, FRACTIONS, most_relevant_first=False)
    shares = context_metrics.context_shares(values)
    out = {"explanation_id": row.id, "method": row.method, "target": row.target_id, "model": model.version,
           "deletion_morf": morf.to_dict(), "deletion_lerf": lerf.to_dict(),
           "deletion_gap": round(lerf.auc - morf.auc, 6), "order": "magnitude", "context": shares.to_dict()}
    with _lock:
        _cache[row.id] = out
        while len(_cache) > 256:
            _cache.popitem(last=False)
    return out


@api.get("/api/v1/explanations/{explanation_id}/faithfulness", summary="Deletion curves and context share of a map")
def faithfulness_json(explanation_id: str, request: Request, user: CurrentUser, db: DbSession) -> JSONResponse:
    return JSONResponse(measure(request, db, user, explanation_id), headers=NO_STORE)


@api.get("/api/v1/explanations/{explanation_id}/deletion.png", summary="The map's deletion curves (PNG)",
         response_class=Response)
def deletion_png(explanation_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    import io

    from app.evaluate.report import plt

    out = measure(request, db, user, explanation_id)
    fig, ax = plt.subplots(figsize=(3.4, 2.4))
    ax.plot(out["deletion_morf"]["fractions"], out["deletion_morf"]["scores"], label="most relevant first")
    ax.plot(out["deletion_lerf"]["fractions"], out["deletion_lerf"]["scores"], label="least relevant first")
    ax.set_xlabel("fraction of pixels set to black", fontsize=8)
    ax.set_ylabel("target logit", fontsize=8)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Response(buffer.getvalue(), media_type="image/png", headers=NO_STORE)


@pages.get("/explanations/{explanation_id}/faithfulness")
def faithfulness_partial(explanation_id: str, request: Request, user: CurrentUser, db: DbSession) -> Response:
    try:
        out = measure(request, db, user, explanation_id)
    except DomainError as exc:
        if exc.status_code == 404:
            raise
        response = render(request, "evaluations/_map_faithfulness.html", {"error": exc.detail})
    else:
        response = render(request, "evaluations/_map_faithfulness.html", {"f": out})
    response.headers.update(NO_STORE)
    return response
