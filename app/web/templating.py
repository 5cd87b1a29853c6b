"""Jinja2 rendering with what every page needs: the user, the CSRF token and the research notice."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from app.settings import PROJECT_ROOT

templates = Jinja2Templates(directory=str(PROJECT_ROOT / "templates"))

RESEARCH_NOTICE = (
    "GestaltLens is a research and decision-support tool, not a diagnostic device. "
    "Its output must not be used as the sole basis for a diagnosis."
)


def _model_card(request: Request) -> dict[str, Any] | None:
    from app.predictions.notice import model_card  # lazily: the web layer's import must not load the model code

    return model_card(request)


templates.env.globals["model_card"] = _model_card  # templates/_model_use.html: intended use above model output


def _on_event_loop() -> bool:
    """True in the server's event-loop thread: a page drawn there must not check out a database connection (when
    the pool is exhausted, the loop would wait for connections held by requests that wait for the loop). Such a
    fragment says no wait phrase; the next poll, in a worker thread, does."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _job_wait(request: Request, job: Any) -> str:
    """A job's place in its lane and its estimate, as a phrase (app.jobs.outlook.wait_phrase); ``job`` is a Job,
    a job id or None. Every page that shows a pending job says this instead of a fixed "waiting for a worker"."""
    from app.jobs.models import Job
    from app.jobs.outlook import outlook_for, wait_phrase

    if job is None or _on_event_loop():
        return ""
    job_id = job if isinstance(job, str) else getattr(job, "id", None)
    if not job_id:
        return ""
    said = getattr(request.state, "job_waits", None)  # a page of many pending maps asks once per job
    if said is None:
        said = request.state.job_waits = {}
    if job_id not in said:
        with request.app.state.sessions() as session:
            row = session.get(Job, job_id)
            said[job_id] = wait_phrase(outlook_for(session, row)) if row is not None else ""
    return said[job_id]


templates.env.globals["job_wait"] = _job_wait  # templates/_*progress.html, cohorts/_result.html, compare, studies


@dataclass(frozen=True)
class Viewer:
    """What pages show of the logged-in user, copied when the request authenticated.

    Why a copy: an error page is drawn after the route's session rolled back and closed, when the ORM user is
    expired and detached; reading ``user.username`` then raised DetachedInstanceError and turned a 422 (a
    cohort below the privacy floor, asked for from the page) into a 500."""

    id: int
    username: str
    role: str
    is_admin: bool

    @classmethod
    def of(cls, user: Any) -> Viewer | None:
        return None if user is None else cls(user.id, user.username, user.role, bool(user.is_admin))


def render(request: Request, name: str, context: dict[str, Any] | None = None, status_code: int = 200) -> Response:
    ctx = {
        "user": getattr(request.state, "viewer", None) or getattr(request.state, "user", None),
        "csrf_token": getattr(request.state, "csrf_token", ""),
        "research_notice": RESEARCH_NOTICE,
    }
    ctx.update(context or {})
    return templates.TemplateResponse(request, name, ctx, status_code=status_code)
