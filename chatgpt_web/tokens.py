"""Access tokens: reading a JWT's expiry without verifying it (the upstream verifies), and the
TokenProvider that turns credentials into access tokens through the on-disk token cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import jwt

from .config import Config
from .errors import Unauthorized
from .store import Store
from .upstream import auth

log = logging.getLogger(__name__)

# Bump the version when the stored value changes shape: old entries are then simply never read.
CACHE_PREFIX = "token:v1:"


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT as unix seconds, or None if `token` is not a JWT with an exp."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, (int, float)) else None


def ensure_not_expired(access_token: str) -> None:
    """Refuse a JWT whose exp has passed before any upstream call. Non-JWTs pass through
    (reverse proxies issue tokens of their own).

    :raise Unauthorized: code token_expired.
    """
    exp = jwt_expiry(access_token)
    if exp is not None and exp <= time.time():
        raise Unauthorized("the access token has expired; get a new one from /get_access_token",
                           "token_expired")


@dataclass(frozen=True)
class Credential:
    """What a caller proved who they are with: an email and password (plus a one-time code when
    the account has MFA), a session cookie, or a refresh token. Secrets stay out of repr."""

    kind: str  # "password", "session_token" or "refresh_token"
    secrets: tuple[str, ...] = field(repr=False)
    otp: str | None = field(default=None, repr=False)

    @classmethod
    def password(cls, email: str, password: str, otp: str | None = None) -> Credential:
        return cls("password", (email, password), otp)

    @classmethod
    def session_token(cls, token: str) -> Credential:
        return cls("session_token", (token,))

    @classmethod
    def refresh_token(cls, token: str) -> Credential:
        return cls("refresh_token", (token,))

    def cache_key(self) -> str:
        """`token:v1:<sha256>` over the kind and every secret, so that knowing the email alone
        never finds a token. The one-time code is left out: it changes, the account does not."""
        digest = hashlib.sha256(b"chatgpt_web token cache v1")
        parts = list(self.secrets)
        if self.kind == "password":
            # Auth0 treats the email case-insensitively; the password stays exact.
            parts[0] = parts[0].strip().lower()
        for part in (self.kind, *parts):
            data = part.encode("utf-8")
            # Length-prefixed so ("ab", "c") and ("a", "bc") never hash alike.
            digest.update(len(data).to_bytes(8, "big") + data)
        return f"{CACHE_PREFIX}{digest.hexdigest()}"


@dataclass(frozen=True)
class IssuedToken:
    """An access token for a caller, and the credentials the upstream issued anew, if any."""

    access_token: str = field(repr=False)
    expires_at: int | None
    session_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    from_cache: bool = False


def _login(config: Config, credential: Credential) -> auth.LoginResult:
    if credential.kind == "password":
        email, password = credential.secrets
        return auth.login_with_password(config, email, password, credential.otp)
    if credential.kind == "session_token":
        return auth.login_with_session_token(config, credential.secrets[0])
    if credential.kind == "refresh_token":
        return auth.login_with_refresh_token(config, credential.secrets[0])
    raise ValueError(f"unknown credential kind {credential.kind!r}")


class TokenProvider:
    """Access tokens for credentials, reused from the store until TOKEN_EXPIRY_MARGIN seconds
    before their JWT `exp`. Logins are slow and rate limited upstream, so a second request with
    the same credentials is answered without any upstream call.

    The store holds `{access_token, expires_at}` under `Credential.cache_key()`, nothing else:
    never a password, and no secret in a key.
    """

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self._locks = _KeyLocks()
        self._store_warned = False

    def access_token(self, credential: Credential, *, force: bool = False) -> IssuedToken:
        """A live access token for `credential`; `force` skips the cache and logs in again.

        :raise ApiError: the login failed (see upstream/auth.py for the codes).
        """
        key = credential.cache_key()
        if not force and (cached := self._cached(key)):
            return cached
        # Concurrent requests with the same credentials wait for one login instead of each
        # starting their own (within this process).
        with self._locks.hold(key):
            if not force and (cached := self._cached(key)):
                return cached
            result = _login(self.config, credential)
            exp = jwt_expiry(result.access_token)
            issued = IssuedToken(result.access_token, int(exp) if exp is not None else None,
                                 result.session_token, result.refresh_token)
            # Stored before the lock is released, so that the requests waiting on it find it.
            self._remember(key, issued)
        # The caller will come back with the rotated credential: let it find the token too.
        if result.session_token:
            self._remember(Credential.session_token(result.session_token).cache_key(), issued)
        if result.refresh_token:
            self._remember(Credential.refresh_token(result.refresh_token).cache_key(), issued)
        return issued

    def _cached(self, key: str) -> IssuedToken | None:
        value = self._store_call(self.store.get, key)
        if not isinstance(value, dict) or not isinstance(value.get("access_token"), str):
            return None
        # The JWT itself is re-read: an entry that is stale or not a JWT is never served.
        exp = jwt_expiry(value["access_token"])
        if exp is None or exp - self.config.token_expiry_margin <= time.time():
            self._store_call(self.store.delete, key)
            return None
        return IssuedToken(value["access_token"], int(exp), from_cache=True)

    def _remember(self, key: str, issued: IssuedToken) -> None:
        if issued.expires_at is None:
            return  # not a JWT: we cannot tell when it stops working
        ttl = issued.expires_at - self.config.token_expiry_margin - time.time()
        if ttl <= 0:
            return
        value = {"access_token": issued.access_token, "expires_at": issued.expires_at}
        self._store_call(self.store.set, key, value, expire=ttl)

    def _store_call(self, method, *args, **kwargs):
        """Run a store operation; a broken cache (disk full, directory removed) only costs
        logins."""
        try:
            return method(*args, **kwargs)
        except (OSError, sqlite3.Error) as exc:
            if not self._store_warned:
                self._store_warned = True
                log.warning("token cache unusable (%s); logging in without it",
                            type(exc).__name__)
            return None


class _KeyLocks:
    """One threading lock per key, kept only while someone holds or waits for it."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, list] = {}  # key -> [lock, holders and waiters]

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]
