"""Users page actions beyond "add": deactivate / reactivate and password reset (admins only).

Each answers the whole users page (htmx swaps ``#main``), with the outcome said in words; the audit trail
records who changed whose account, never the password.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.audit import service as audit
from app.auth import accounts
from app.auth import service as auth_service
from app.auth.models import Role, User
from app.web.deps import AdminUser, DbSession, client_ip
from app.web.errors import NotFound
from app.web.templating import render

router = APIRouter(include_in_schema=False)


def _page(request: Request, db: DbSession, *, message: str | None = None, error: str | None = None) -> Response:
    ctx = {"users": auth_service.list_users(db), "roles": list(Role), "message": message, "error": error}
    return render(request, "admin/users.html", ctx, 400 if error else 200)


def _user(db: DbSession, user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise NotFound("user")
    return user


@router.post("/admin/users/{user_id}/active")
def users_set_active(
    user_id: int, request: Request, db: DbSession, admin: AdminUser, active: Annotated[bool, Form()],
) -> Response:
    user = _user(db, user_id)
    try:
        accounts.set_active(db, actor=admin, user=user, active=active)
        audit.record(db, action="user_activate" if active else "user_deactivate", user=admin, ip=client_ip(request),
                     detail={"username": user.username})
        db.commit()
    except auth_service.AccountError as exc:
        db.rollback()
        return _page(request, db, error=exc.detail)
    verb = "reactivated" if active else "deactivated; their sessions and API tokens were ended"
    return _page(request, db, message=f"{user.username} {verb}.")


@router.post("/admin/users/{user_id}/password")
def users_reset_password(
    user_id: int, request: Request, db: DbSession, admin: AdminUser,
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    user = _user(db, user_id)
    try:
        accounts.reset_password(db, user=user, password=password)
        audit.record(db, action="user_password_reset", user=admin, ip=client_ip(request),
                     detail={"username": user.username})
        db.commit()
    except auth_service.AccountError as exc:
        db.rollback()
        return _page(request, db, error=exc.detail)
    return _page(request, db, message=f"New password set for {user.username}; their sessions were ended.")
