"""Request-side helpers around the served model (kept out of the ML core, which knows nothing of requests).

Routes that need the model take :data:`ServedModel` (or call :func:`require_model` where they need it only on
some paths): one place says what a request answers when the model cannot be loaded (503 ``model_unavailable``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.errors import Unavailable
from app.nets.registry import LoadedModel
from app.predictions.provider import ModelProvider, ModelUnavailable


def provider(request: Request) -> ModelProvider:
    return request.app.state.models


def require_model(request: Request) -> LoadedModel:
    """The served model, or 503 ``model_unavailable`` saying why it cannot be loaded (a FastAPI dependency)."""
    try:
        return provider(request).get()
    except ModelUnavailable as exc:
        raise Unavailable("model_unavailable", str(exc)) from exc


#: A route parameter ``model: ServedModel`` is the served model, or the request is answered 503.
ServedModel = Annotated[LoadedModel, Depends(require_model)]


def served_model(request: Request) -> LoadedModel | None:
    """The served model, or None when it cannot be loaded (intake keeps working without a ranking)."""
    try:
        return provider(request).get()
    except ModelUnavailable:
        return None


def served_version(request: Request) -> str | None:
    model = served_model(request)
    return model.version if model else None


def model_problem(request: Request) -> str | None:
    try:
        provider(request).get()
    except ModelUnavailable as exc:
        return str(exc)
    return None
