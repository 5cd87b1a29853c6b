"""Request-scoped dependencies: the database session and the authenticated user."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.auth import basic_cache
from app.auth import service as auth_service
from app.auth.models import User
from app.settings import Settings
from app.web.csrf import SESSION_COOKIE, header_credentials
from app.web.errors import ApiError, NotAuthenticated
from app.web.templating import Viewer


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Iterator[Session]:
    session = request.app.state.sessions()
    try:
        yield session
    finally:
        session.close()


DbSession = Annotated[Session, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def throttle_policy(settings: Settings) -> auth_service.ThrottlePolicy:
    return auth_service.ThrottlePolicy(
        max_failures=settings.login_max_failures, window=timedelta(minutes=settings.login_lockout_minutes)
    )


def _user_from_basic(request: Request, db: Session, credentials: str) -> User | None:
    try:
        username, _, password = base64.b64decode(credentials, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not (username + password).isprintable():  # NUL and control characters: no such user, never a 500
        return None
    settings: Settings = request.app.state.settings
    try:
        # Verified credentials are cached (keyed digest, minutes, re-checked against the user row): GM clients
        # send Basic on every call and an Argon2 check per call would double a /predict.
        user = basic_cache.authenticate_cached(
            db, cache=basic_cache.credential_cache(request.app.state, settings.resolved_secret_key),
            username=username, password=password, ip=client_ip(request), policy=throttle_policy(settings),
        )
    except auth_service.LoginThrottled as exc:
        raise ApiError(429, "too_many_attempts", "Too many failed logins; try again later.") from exc
    db.commit()
    return user


def optional_user(request: Request, db: DbSession) -> User | None:
    """The caller, from a Bearer token, HTTP Basic (GestaltMatcher clients) or the session cookie."""
    # One rule with the CSRF middleware: the header authenticates exactly when CSRF checks are skipped.
    found = header_credentials(request.url.path, request.headers.get("authorization"))
    user: User | None = None
    if found is not None:
        scheme, credentials = found
        if scheme == "bearer":
            user = auth_service.user_for_api_token(db, token=credentials) if credentials.isprintable() else None
            db.commit()
        else:
            user = _user_from_basic(request, db, credentials)
    elif token := request.cookies.get(SESSION_COOKIE):
        user = auth_service.user_for_session_token(db, token=token)
        # End the read's transaction, which hands the pooled connection back: a browser upload held it
        # through decoding, detection and ranking, and 20 of them at once exhausted the pool (issue 20).
        db.commit()
    request.state.user = user
    request.state.viewer = Viewer.of(user)  # what pages show, readable after the session has closed
    return user


def require_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise NotAuthenticated()
    return user


def require_admin(user: Annotated[User, Depends(require_user)]) -> User:
    if not user.is_admin:
        raise ApiError(403, "forbidden", "Administrators only.")
    return user


CurrentUser = Annotated[User, Depends(require_user)]
AdminUser = Annotated[User, Depends(require_admin)]
