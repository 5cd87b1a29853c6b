"""Login, logout, first-run setup and user administration pages."""

from __future__ import annotations

import logging
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.audit import service as audit
from app.auth import service
from app.auth.models import Role, User
from app.auth.security import constant_time_equal
from app.settings import Settings
from app.web.csrf import SESSION_COOKIE
from app.web.deps import AdminUser, AppSettings, DbSession, client_ip, throttle_policy
from app.web.errors import NotFound
from app.web.templating import render

log = logging.getLogger("gestaltlens.setup")

router = APIRouter(tags=["accounts"])


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: an open redirect after login would help phishing."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/cases"
    return target


def _login_response(request: Request, settings: Settings, token: str, target: str) -> Response:
    if "hx-request" in request.headers:
        response: Response = Response(status_code=204, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies or request.url.scheme == "https",
        path="/",
    )
    return response


def new_setup_code() -> str:
    return "-".join(secrets.token_hex(3).upper() for _ in range(3))


def ensure_setup_code_for_app(app: object) -> str:
    """The one-time code guarding /setup: made when no user exists and printed to the server console only."""
    state = app.state  # type: ignore[attr-defined]
    if not getattr(state, "setup_code", None):
        state.setup_code = new_setup_code()
        announce_setup_code(state.setup_code)
    return state.setup_code


def ensure_setup_code(request: Request) -> str:
    return ensure_setup_code_for_app(request.app)


def announce_setup_code(code: str) -> None:
    banner = f"GestaltLens first-run setup code: {code}  (open /setup in the browser to create the administrator)"
    log.warning(banner)
    print(banner, flush=True)


@router.get("/login", include_in_schema=False)
def login_page(request: Request, db: DbSession, next: str | None = None) -> Response:
    if service.user_count(db) == 0:
        return RedirectResponse("/setup", status_code=303)
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login", include_in_schema=False)
def login_submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str | None, Form()] = None,
) -> Response:
    ip = client_ip(request)
    target = _safe_next(next)
    try:
        user = service.authenticate(
            db, username=username, password=password, ip=ip, policy=throttle_policy(settings)
        )
    except service.LoginThrottled:
        audit.record(db, action="login_throttled", user=None, username=username[:64], ip=ip)
        db.commit()
        msg = "Too many failed attempts. Wait a few minutes and try again."
        return render(request, "login.html", {"next": target, "error": msg, "username": username}, 429)
    if user is None:
        audit.record(db, action="login_failed", user=None, username=username[:64], ip=ip)
        db.commit()
        msg = "Unknown username or wrong password."
        return render(request, "login.html", {"next": target, "error": msg, "username": username}, 400)
    token = service.create_session(
        db, user=user, hours=settings.session_hours, user_agent=request.headers.get("user-agent")
    )
    audit.record(db, action="login", user=user, ip=ip)
    db.commit()
    return _login_response(request, settings, token, target)


@router.post("/logout", include_in_schema=False)
def logout(request: Request, db: DbSession) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        user = service.user_for_session_token(db, token=token)
        service.revoke_session(db, token=token)
        if user is not None:
            audit.record(db, action="logout", user=user, ip=client_ip(request))
        db.commit()
    headers = {"HX-Redirect": "/login"} if "hx-request" in request.headers else {}
    response: Response = (
        Response(status_code=204, headers=headers) if headers else RedirectResponse("/login", status_code=303)
    )
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/setup", include_in_schema=False)
def setup_page(request: Request, db: DbSession) -> Response:
    if service.user_count(db) > 0:
        raise NotFound("page")
    ensure_setup_code(request)
    return render(request, "setup.html", {"error": None})


@router.post("/setup", include_in_schema=False)
def setup_submit(
    request: Request,
    db: DbSession,
    settings: AppSettings,
    code: Annotated[str, Form(max_length=64)],
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    password_repeat: Annotated[str, Form(max_length=1024)],
) -> Response:
    if service.user_count(db) > 0:
        raise NotFound("page")
    ip = client_ip(request)
    expected = ensure_setup_code(request)
    policy = throttle_policy(settings)
    ctx = {"username": username}
    try:
        attempt = service.reserve_attempt(db, username="(setup)", ip=ip, policy=policy)
    except service.LoginThrottled:
        return render(request, "setup.html", {**ctx, "error": "Too many wrong codes; wait and retry."}, 429)
    if not constant_time_equal(code.strip().upper(), expected):
        msg = "The setup code is wrong. It is printed in the server console."
        return render(request, "setup.html", {**ctx, "error": msg}, 400)
    attempt.succeeded = True  # the code was right: a typo in the password below is no guess
    db.commit()
    if password != password_repeat:
        return render(request, "setup.html", {**ctx, "error": "The two passwords differ."}, 400)
    try:
        user = service.create_user(db, username=username, password=password, role=Role.admin.value)
    except service.AccountError as exc:
        return render(request, "setup.html", {**ctx, "error": exc.detail}, 400)
    audit.record(db, action="setup", user=user, ip=ip)
    token = service.create_session(
        db, user=user, hours=settings.session_hours, user_agent=request.headers.get("user-agent")
    )
    db.commit()
    request.app.state.setup_code = None
    return _login_response(request, settings, token, "/cases")


@router.get("/admin/users", include_in_schema=False)
def users_page(request: Request, db: DbSession, admin: AdminUser) -> Response:
    return render(request, "admin/users.html", {"users": service.list_users(db), "roles": list(Role)})


@router.post("/admin/users", include_in_schema=False)
def users_create(
    request: Request,
    db: DbSession,
    admin: AdminUser,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1024)],
    role: Annotated[str, Form(max_length=16)],
) -> Response:
    error = None
    try:
        user = service.create_user(db, username=username, password=password, role=role)
        audit.record(db, action="user_add", user=admin, ip=client_ip(request), detail={"username": user.username})
        db.commit()
    except service.AccountError as exc:
        db.rollback()
        error = exc.detail
    ctx = {"users": service.list_users(db), "roles": list(Role), "error": error}
    return render(request, "admin/users.html", ctx, 400 if error else 200)


def user_json(user: User) -> dict[str, object]:
    return {"id": user.id, "username": user.username, "role": user.role, "is_active": user.is_active}
