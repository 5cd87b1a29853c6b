"""The served model's card as pages show it: the intended use stands above every ranking and map.

Registered as the Jinja global ``model_card(request)`` so a partial can show it without every route having
to pass it. It never loads a model that is not loaded yet for a page that shows no model output: pages
call it only where a ranking or a map is drawn, and those already need the model.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.predictions.serving import served_model


def model_card(request: Request) -> dict[str, Any] | None:
    """id, version and intended use of the served model (None when it cannot be loaded)."""
    model = served_model(request)
    if model is None:
        return None
    return {"id": model.card.id, "version": model.card.version, "intended_use": model.card.intended_use}
