"""Account service functions: users, password login with throttling, sessions and API tokens.

Functions take keyword arguments and a session and never commit: routes and the CLI own the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.auth.models import ApiToken, AuthSession, LoginAttempt, Role, User
from app.auth.security import (
    burn_password_check,
    hash_password,
    new_api_token,
    new_session_token,
    password_problem,
    token_digest,
    verify_password,
)
from app.db import utcnow
from app.errors import DomainError


class AccountError(DomainError):
    """A user-facing problem with account input (duplicate name, weak password, unknown role); a subclass so
    that the account pages and the CLI can show exactly these next to the form."""


class LoginThrottled(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many failed attempts")
        self.retry_after_s = retry_after_s


USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def user_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User)) or 0


def get_user_by_name(session: Session, *, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def create_user(session: Session, *, username: str, password: str, role: str) -> User:
    username = username.strip()
    if not (2 <= len(username) <= 64) or not set(username) <= USERNAME_CHARS:
        raise AccountError("invalid_account", "Usernames have 2-64 characters: letters, digits, '.', '_', '-', '@'.")
    if role not in {r.value for r in Role}:
        raise AccountError("invalid_account", f"Unknown role {role!r}; use 'admin' or 'clinician'.")
    if problem := password_problem(password):
        raise AccountError("weak_password", problem)
    if get_user_by_name(session, username=username) is not None:
        raise AccountError("username_taken", f"The username {username!r} is taken.")
    user = User(username=username, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


@dataclass(frozen=True)
class ThrottlePolicy:
    max_failures: int
    window: timedelta

    @property
    def max_failures_per_ip(self) -> int:
        # An address may try a few accounts (a shared hospital NAT), but not spray all of them.
        return self.max_failures * 4


def _recent_failures(session: Session, *, column: object, value: str, since: datetime) -> int:
    """Failures (and attempts still being checked) since ``since``. A later success does not reset the count:
    otherwise anyone with one account of their own could clear an address's cap by logging in."""
    query = select(func.count()).where(column == value, LoginAttempt.succeeded.is_(False),
                                       LoginAttempt.created_at > since)
    return session.scalar(query) or 0


def _over_limit(session: Session, *, username: str, ip: str, policy: ThrottlePolicy, pending: int) -> bool:
    since = utcnow() - policy.window
    by_user = _recent_failures(session, column=LoginAttempt.username, value=username, since=since)
    by_ip = _recent_failures(session, column=LoginAttempt.ip, value=ip, since=since)
    return by_user - pending >= policy.max_failures or by_ip - pending >= policy.max_failures_per_ip


def check_throttle(session: Session, *, username: str, ip: str, policy: ThrottlePolicy) -> None:
    """Raise LoginThrottled when the username or the address has used up its failures in the window."""
    if _over_limit(session, username=username, ip=ip, policy=policy, pending=0):
        raise LoginThrottled(int(policy.window.total_seconds()))


def record_attempt(session: Session, *, username: str, ip: str, succeeded: bool) -> None:
    """One row for the throttle; also used for setup-code guesses, which are throttled the same way."""
    session.add(LoginAttempt(username=username[:64], ip=ip[:64], succeeded=succeeded))


def reserve_attempt(session: Session, *, username: str, ip: str, policy: ThrottlePolicy) -> LoginAttempt:
    """Count this attempt as a failure *before* the password is checked, committed in its own transaction.

    Checking first and recording afterwards let 30 simultaneous guesses all pass the check (each saw the
    same few failures while the others were still hashing). Here every attempt is visible before anyone
    counts: the m-th attempt to commit counts at least m rows, so at most ``max_failures`` attempts are
    ever checked within a window, on SQLite and PostgreSQL alike. A refused attempt removes its row again
    (it was not checked, so it is no failure). This commits: the throttle must not wait for the caller's
    transaction.
    """
    attempt = LoginAttempt(username=username[:64], ip=ip[:64], succeeded=False)
    session.add(attempt)
    session.commit()
    if _over_limit(session, username=username[:64], ip=ip[:64], policy=policy, pending=1):
        session.delete(attempt)
        session.commit()
        raise LoginThrottled(int(policy.window.total_seconds()))
    return attempt


def authenticate(
    session: Session, *, username: str, password: str, ip: str, policy: ThrottlePolicy
) -> User | None:
    """Check a password, recording the attempt. Raises LoginThrottled before checking when locked out."""
    username = username.strip()[:64]
    attempt = reserve_attempt(session, username=username, ip=ip, policy=policy)
    user = get_user_by_name(session, username=username)
    if user is None:
        burn_password_check(password)
        ok = False
    else:
        ok = verify_password(password, user.password_hash) and user.is_active
    if ok and user is not None:
        attempt.succeeded = True
        user.last_login_at = utcnow()
        return user
    return None


def create_session(session: Session, *, user: User, hours: int, user_agent: str | None) -> str:
    """Start a browser session; returns the raw token for the cookie (only its digest is stored)."""
    token = new_session_token()
    session.add(
        AuthSession(
            user_id=user.id,
            token_hash=token_digest(token),
            expires_at=utcnow() + timedelta(hours=hours),
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    return token


def user_for_session_token(session: Session, *, token: str) -> User | None:
    row = session.scalar(select(AuthSession).where(AuthSession.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    return row.user if row.user.is_active else None


def revoke_session(session: Session, *, token: str) -> None:
    session.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == token_digest(token), AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def create_api_token(session: Session, *, user: User, name: str = "cli") -> str:
    token = new_api_token()
    session.add(ApiToken(user_id=user.id, token_hash=token_digest(token), name=name[:120]))
    return token


def user_for_api_token(session: Session, *, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == token_digest(token)))
    if row is None or row.revoked_at is not None or not row.user.is_active:
        return None
    row.last_used_at = utcnow()
    return row.user


def revoke_api_tokens(session: Session, *, user: User) -> int:
    result = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return result.rowcount or 0
