"""Account administration an admin needs beyond creating users: deactivate / reactivate, reset a password.

Deactivating keeps the user row (cases, ratings and the audit trail refer to it) and ends every session
and API token at once, so a departed colleague cannot keep working from an open tab or a script. An admin
cannot deactivate themself, nor the last active admin: either would lock the installation out.
A reset password ends the user's sessions too (whoever knew the old one is logged out).
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.auth.models import AuthSession, Role, User
from app.auth.security import hash_password, password_problem
from app.auth.service import AccountError, revoke_api_tokens
from app.db import utcnow

__all__ = ["reset_password", "set_active"]


def _revoke_sessions(session: Session, user: User) -> None:
    session.execute(update(AuthSession).where(AuthSession.user_id == user.id, AuthSession.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))


def set_active(session: Session, *, actor: User, user: User, active: bool) -> User:
    """Deactivate (ending sessions and tokens) or reactivate ``user``."""
    if not active:
        if user.id == actor.id:
            raise AccountError("invalid_account", "You cannot deactivate your own account.")
        if user.role == Role.admin.value and user.is_active:
            admins = session.scalar(select(func.count()).select_from(User).where(
                User.role == Role.admin.value, User.is_active.is_(True))) or 0
            if admins <= 1:
                raise AccountError("invalid_account", "This is the last active administrator.")
        _revoke_sessions(session, user)
        revoke_api_tokens(session, user=user)
    user.is_active = active
    session.flush()
    return user


def reset_password(session: Session, *, user: User, password: str) -> User:
    """Set a new password (same rules as at creation) and end the user's sessions."""
    if problem := password_problem(password):
        raise AccountError("weak_password", problem)
    user.password_hash = hash_password(password)
    _revoke_sessions(session, user)
    session.flush()
    return user
