"""A short-lived cache of verified HTTP Basic credentials.

GestaltMatcher clients send ``Authorization: Basic`` on every call, and verifying a password with
Argon2id costs 0.5–1 s on a small server by design — once per call, that doubles the time of a
``/predict``. A credential that verified is therefore remembered for a few minutes, under a *keyed*
digest (HMAC-SHA-256 with the server's secret key) of username and password: the cache holds no
password and no digest that could be tested offline without the key.

A hit is only trusted after checking the database row it names: the user must still exist, be
active, have the same name, and have the same password hash as when the credential verified. So a
password change or a deactivation ends the cached credential at once, in every process (each process
has its own cache; the database is the truth). Throttling still applies to hits: a locked-out account
stays locked out even with a cached credential.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy.orm import Session

from app.auth import service as auth_service
from app.auth.models import User

__all__ = ["DEFAULT_TTL_S", "CachedCredential", "CredentialCache", "authenticate_cached", "credential_cache"]

DEFAULT_TTL_S = 300.0
DEFAULT_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class CachedCredential:
    user_id: int
    username: str
    hash_fingerprint: str  # sha256 of the stored password hash when the credential verified
    expires_at: float  # time.monotonic()


def credential_cache(state: object, secret: str) -> CredentialCache:
    """The app's cache (``app.state.basic_credentials``), made on first use."""
    cache = getattr(state, "basic_credentials", None)
    if cache is None:
        cache = CredentialCache(secret)
        state.basic_credentials = cache  # type: ignore[attr-defined]
    return cache


def hash_fingerprint(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()


class CredentialCache:
    """Thread-safe, bounded (LRU), time-limited map from a keyed credential digest to the user it proved."""

    def __init__(self, secret: str, *, ttl_s: float = DEFAULT_TTL_S, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._secret = secret.encode()
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedCredential] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, username: str, password: str) -> str:
        # NUL cannot occur in a username, so "a" + "b:c" and "a:b" + "c" never share a key.
        message = username.encode() + b"\x00" + password.encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def get(self, key: str) -> CachedCredential | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry.expires_at <= time.monotonic():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, key: str, *, user_id: int, username: str, password_hash: str) -> None:
        entry = CachedCredential(user_id=user_id, username=username, hash_fingerprint=hash_fingerprint(password_hash),
                                 expires_at=time.monotonic() + self.ttl_s)
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def drop(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def drop_user(self, user_id: int) -> None:
        """Forget every credential of a user (called when a password changes or an account is disabled)."""
        with self._lock:
            for key in [k for k, v in self._entries.items() if v.user_id == user_id]:
                del self._entries[key]

    def still_valid(self, entry: CachedCredential, *, user_id: int, username: str, password_hash: str,
                    is_active: bool) -> bool:
        """Does the database row still match what the credential proved?"""
        return (is_active and user_id == entry.user_id and username == entry.username
                and hmac.compare_digest(hash_fingerprint(password_hash), entry.hash_fingerprint))

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def authenticate_cached(
    session: Session, *, cache: CredentialCache, username: str, password: str, ip: str,
    policy: auth_service.ThrottlePolicy,
) -> User | None:
    """:func:`app.auth.service.authenticate` for HTTP Basic, with verified credentials cached.

    The throttle is checked on every call, hit or miss (``LoginThrottled`` propagates). A hit costs one
    primary-key lookup instead of an Argon2 verification and records no login attempt; a miss verifies
    as usual and caches the credential only when it verified.
    """
    username = username.strip()[:64]
    key = cache.key(username, password)
    entry = cache.get(key)
    if entry is not None:
        auth_service.check_throttle(session, username=username, ip=ip, policy=policy)
        user = session.get(User, entry.user_id)
        if user is not None and cache.still_valid(entry, user_id=user.id, username=user.username,
                                                  password_hash=user.password_hash, is_active=user.is_active):
            return user
        cache.drop(key)
    user = auth_service.authenticate(session, username=username, password=password, ip=ip, policy=policy)
    if user is not None:
        cache.put(key, user_id=user.id, username=user.username, password_hash=user.password_hash)
    return user
