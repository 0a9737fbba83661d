"""Access tokens: reading a JWT's expiry without verifying it (the upstream verifies), and the
TokenProvider that turns credentials into access tokens through the shared token store.

Session and refresh tokens rotate: the upstream answers each use with a new one and refuses the
old one from then on (a spent refresh token even revokes its whole family). So the store keeps,
for each token ever spent, its successor, sealed (AES-GCM) with a key derived from the spent token
itself: whoever presents any old token is led to the newest, which only holders of the chain can
read. A spent token is never sent again once its successor is known; the successor is stored
under the store's lock, before the access token it came with is used, so that one refresh or
session exchange happens across threads, worker processes and instances while the others wait
for its result. Nothing in the store is a readable secret; keys are hashes that include it.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import Config
from .errors import ApiError, Unauthorized
from .jwt_claims import expiry, unverified_claims
from .store import Store
from .upstream import auth
from .upstream.errors import login_error

log = logging.getLogger(__name__)

# Bump the version when a stored value changes shape: old entries are then simply never read.
CACHE_PREFIX = "token:v2:"
NEXT_PREFIX = "token:v2:next:"        # spent credential -> its sealed successor
PENDING_PREFIX = "token:v2:pending:"  # email+password -> a sign-in waiting for an e-mailed code
CLIENT_PREFIX = "token:v2:client:"    # refresh token -> the OAuth client that took it
CHECKED_PREFIX = "token:v2:checked:"  # account -> GET /backend-api/me done in this interval
REFUSED_PREFIX = "token:v2:refused:"  # access token the backend refused
CHAIN_TTL = 90 * 24 * 3600
MAX_CHAIN = 50
PENDING_TTL = 600
# A session exchange or refresh takes a few seconds; the lock outlives a slow one, and a waiter
# gives up (503) only after the holder had time for two.
LOCK_TTL = 90.0
LOCK_WAIT = 120.0
SECOND_FACTOR_TTL = 30 * 24 * 3600


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT as unix seconds, or None if `token` is not a JWT with an exp."""
    return expiry(unverified_claims(token))


def _account_of(access_token: str) -> str:
    """A stable name for the account behind an access token: its chatgpt_account_id claim, else
    the token itself (hashed by the caller)."""
    claims = unverified_claims(access_token)
    if claims is None:
        return access_token
    auth_claim = claims.get("https://api.openai.com/auth")
    account = auth_claim.get("chatgpt_account_id") if isinstance(auth_claim, dict) else None
    return account if isinstance(account, str) and account else access_token


def _digest(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        # Length-prefixed so ("ab", "c") and ("a", "bc") never hash alike.
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


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
    the account has a second factor), a session cookie, or a refresh token (and the OAuth client
    it was issued to, when known). Secrets stay out of repr."""

    kind: str  # "password", "session_token" or "refresh_token"
    secrets: tuple[str, ...] = field(repr=False)
    otp: str | None = field(default=None, repr=False)
    client_id: str | None = None
    # An authenticator's base32 secret held by the server (a pooled account): it makes its own
    # codes, so its sign-ins are cached as any other.
    totp_secret: str | None = field(default=None, repr=False)

    @classmethod
    def password(cls, email: str, password: str, otp: str | None = None, *,
                 totp_secret: str | None = None) -> Credential:
        return cls("password", (email, password), otp, totp_secret=totp_secret)

    @classmethod
    def session_token(cls, token: str) -> Credential:
        return cls("session_token", (auth.join_session_token(token),))

    @classmethod
    def refresh_token(cls, token: str, client_id: str | None = None) -> Credential:
        return cls("refresh_token", (token,), client_id=client_id)

    def _parts(self) -> tuple[str, ...]:
        parts = list(self.secrets)
        if self.kind == "password":
            # The identity provider treats the email case-insensitively; the password stays exact.
            parts[0] = parts[0].strip().lower()
        return (self.kind, *parts)

    def digest(self) -> str:
        """SHA-256 over the kind and every secret, so that knowing the email alone never finds
        a token. The one-time code is left out: it changes, the account does not."""
        return _digest("chatgpt_web token cache v2", *self._parts())

    def cache_key(self) -> str:
        """`token:v2:<digest>`, where the access token of this credential is kept."""
        return CACHE_PREFIX + self.digest()

    def seal_key(self) -> bytes:
        """The AES key of what is stored for this credential: derived from its secrets under
        another label than cache_key(), so that the key in the store reveals nothing of it."""
        return bytes.fromhex(_digest("chatgpt_web token seal v2", *self._parts()))

    def successor(self, secret: str, client_id: str | None = None) -> Credential:
        """The credential the upstream rotated this one into."""
        return replace(self, secrets=(secret,), client_id=client_id or self.client_id)


def _seal(credential: Credential, label: str, plaintext: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(credential.seal_key()).encrypt(nonce, plaintext.encode(), label.encode())
    return base64.b64encode(nonce + sealed).decode()


def _unseal(credential: Credential, label: str, sealed: object) -> str | None:
    """The plaintext, or None for anything that is not ours (a wrong key, damage, garbage)."""
    if not isinstance(sealed, str):
        return None
    try:
        raw = base64.b64decode(sealed, validate=True)
        return AESGCM(credential.seal_key()).decrypt(raw[:12], raw[12:], label.encode()).decode()
    except (ValueError, InvalidTag):
        return None


@dataclass(frozen=True)
class IssuedToken:
    """An access token for a caller, and the credentials the upstream issued anew, if any."""

    access_token: str = field(repr=False)
    expires_at: int | None
    session_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    from_cache: bool = False


def totp(secret: str, at: float | None = None) -> str:
    """The current six-digit code of an authenticator app with base32 `secret` (RFC 6238)."""
    key = base64.b32decode(secret.replace(" ", "").upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30).to_bytes(8, "big")
    digest = hmac.new(key, counter, hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(int.from_bytes(digest[offset:offset + 4], 'big') & 0x7FFFFFFF) % 1_000_000:06d}"


def _login(config: Config, credential: Credential,
           pending: auth.PendingLogin | None = None) -> auth.LoginResult:
    if credential.kind == "password":
        email, password = credential.secrets
        otp = credential.otp or (totp(credential.totp_secret) if credential.totp_secret else None)
        return auth.login_with_password(config, email, password, otp, pending)
    if credential.kind == "session_token":
        return auth.login_with_session_token(config, credential.secrets[0])
    if credential.kind == "refresh_token":
        return auth.login_with_refresh_token(config, credential.secrets[0], credential.client_id)
    raise ValueError(f"unknown credential kind {credential.kind!r}")


class TokenProvider:
    """Access tokens for credentials, reused from the store until TOKEN_EXPIRY_MARGIN seconds
    before their JWT `exp`. Logins are slow and rate limited upstream, so a second request with
    the same credentials is answered without any upstream call.

    The store holds, under hashed keys: each access token sealed with its credential, with its
    expiry; each spent session or refresh token's successor, sealed with the spent one; a marker
    for email+password logins that needed a second factor (never served from the cache: the code
    cannot be checked without the identity provider); a sign-in waiting for an e-mailed code,
    sealed with the email and password. Never a password, and no readable secret.
    """

    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self._locks = _KeyLocks()
        self._store_warned = False

    def access_token(self, credential: Credential, *, force: bool = False) -> IssuedToken:
        """A live access token for `credential`; `force` skips the cache and logs in again.

        :raise ApiError: the login failed (see upstream/auth.py for the codes), or the backend
            refuses the token it gave (token_invalidated).
        """
        if credential.kind == "password":
            issued = self._password(credential, force)
        else:
            issued = self._rotating(credential, force)
        self._check_account(issued)
        return issued

    # --- session and refresh tokens ----------------------------------------------------------
    def newest(self, credential: Credential) -> Credential:
        """The newest known credential of `credential`'s rotation chain (itself if never spent)."""
        for _ in range(MAX_CHAIN):
            record = self._store_call(self.store.get, NEXT_PREFIX + credential.digest())
            if not isinstance(record, dict):
                break
            secret = _unseal(credential, "next", record.get("sealed"))
            if not secret:
                return credential
            client_id = record.get("client_id")
            credential = credential.successor(secret,
                                              client_id if isinstance(client_id, str) else None)
        if credential.kind == "refresh_token" and not credential.client_id:
            client_id = self._store_call(self.store.get, CLIENT_PREFIX + credential.digest())
            if isinstance(client_id, str):
                credential = replace(credential, client_id=client_id)
        return credential

    def _rotating(self, given: Credential, force: bool) -> IssuedToken:
        current = self.newest(given)
        if not force and (cached := self._cached(current)):
            return self._for_caller(cached, given, current)
        with self._locks.hold(current.cache_key()), \
                self._store_lock(current.cache_key()):
            # Whoever held the lock before us may have spent `current`: follow it.
            newest = self.newest(current)
            if newest != current or not force:
                current = newest
                if cached := self._cached(current):
                    return self._for_caller(cached, given, current)
            result = _login(self.config, current)
            issued = _issued(result)
            rotated = result.session_token or result.refresh_token
            spent = current
            if rotated:
                current = current.successor(rotated, result.client_id)
            elif result.client_id and result.client_id != current.client_id:
                current = replace(current, client_id=result.client_id)
            if result.client_id:
                # A caller who comes back with the new token is sent with the same client.
                self._store_call(self.store.set, CLIENT_PREFIX + current.digest(),
                                 result.client_id, expire=CHAIN_TTL)
            self._remember(current.cache_key(), current, issued)
            if rotated:
                # Last, and before anyone uses the access token: from now on `spent` is never sent
                # again. Whoever follows this link takes the lock of the successor, not ours, so
                # the successor's access token and client must already be stored when it appears.
                self._link(spent, current)
        return self._for_caller(issued, given, current)

    def _for_caller(self, issued: IssuedToken, given: Credential,
                    current: Credential) -> IssuedToken:
        """`issued` carrying the newest session or refresh token when it is not the given one."""
        newer = current.secrets[0] if current.secrets != given.secrets else None
        if given.kind == "session_token":
            return replace(issued, session_token=newer, refresh_token=None)
        return replace(issued, refresh_token=newer, session_token=None)

    def _link(self, spent: Credential, successor: Credential) -> None:
        record = {"sealed": _seal(spent, "next", successor.secrets[0]),
                  "client_id": successor.client_id}
        try:
            self.store.set(NEXT_PREFIX + spent.digest(), record, expire=CHAIN_TTL)
        except (OSError, sqlite3.Error) as exc:
            # The caller still gets the new token in the answer; a pooled account loses it.
            log.error("could not store a rotated %s (%s): the old one is spent",
                      spent.kind, type(exc).__name__)

    # --- email and password ------------------------------------------------------------------
    def _password(self, credential: Credential, force: bool) -> IssuedToken:
        key = credential.cache_key()
        with self._locks.hold(key):
            entry = self._store_call(self.store.get, key)
            holds_factor = credential.totp_secret is not None
            if (isinstance(entry, dict) and entry.get("second_factor") and not credential.otp
                    and not holds_factor):
                # A cached token would skip the code the identity provider asks for.
                error = login_error(
                    "mfa_required", "login",
                    "this account signs in with a one-time code: send the session_token this "
                    "service returned at that sign-in, or sign in again with the code as otp")
                error.param = "otp"
                raise error
            if not force and not credential.otp and (cached := self._cached(credential)):
                return cached
            pending_key = PENDING_PREFIX + credential.digest()
            pending = None
            if credential.otp:
                stored = self._store_call(self.store.get, pending_key)
                text = _unseal(credential, "pending", stored)
                pending = auth.PendingLogin(_json_loads(text)) if text else None
            try:
                result = _login(self.config, credential, pending)
            except ApiError as error:
                waiting = getattr(error, "pending", None)
                if waiting:
                    self._store_call(self.store.set, pending_key,
                                     _seal(credential, "pending", _json_dumps(waiting)),
                                     expire=PENDING_TTL)
                elif pending:
                    self._store_call(self.store.delete, pending_key)
                raise
            if pending:
                self._store_call(self.store.delete, pending_key)
            issued = _issued(result)
            if result.second_factor and not holds_factor:
                self._store_call(self.store.set, key, {"second_factor": True},
                                 expire=SECOND_FACTOR_TTL)
            else:
                self._remember(key, credential, issued)
        # The caller will come back with the session token: let it find the access token.
        if result.session_token:
            session = Credential.session_token(result.session_token)
            self._remember(session.cache_key(), session, issued)
        return issued

    # --- the account check -------------------------------------------------------------------
    def _check_account(self, issued: IssuedToken) -> None:
        """Ask GET /backend-api/me about this account at most once per ACCOUNT_CHECK_INTERVAL
        (across processes and instances); a refused token is remembered as refused.

        :raise Unauthorized: token_invalidated.
        """
        token_key = REFUSED_PREFIX + _digest("refused", issued.access_token)
        if self._store_call(self.store.get, token_key):
            raise login_error("token_invalidated", "account check")
        account_key = CHECKED_PREFIX + _digest("checked", _account_of(issued.access_token))
        hits = self._store_call(self.store.hit, account_key, self.config.account_check_interval)
        if hits is None or hits[0] != 1:
            return
        if auth.check_access_token(self.config, issued.access_token) is False:
            self._store_call(self.store.set, token_key, True,
                             expire=max(self.config.account_check_interval,
                                        (issued.expires_at or 0) - time.time()))
            raise login_error("token_invalidated", "account check")

    # --- the store ---------------------------------------------------------------------------
    def _cached(self, credential: Credential) -> IssuedToken | None:
        key = credential.cache_key()
        value = self._store_call(self.store.get, key)
        if not isinstance(value, dict):
            return None
        access_token = _unseal(credential, "access", value.get("sealed"))
        if not access_token:
            return None
        # The JWT itself is re-read: an entry that is stale or not a JWT is never served.
        exp = jwt_expiry(access_token)
        if exp is None or exp - self.config.token_expiry_margin <= time.time():
            self._store_call(self.store.delete, key)
            return None
        return IssuedToken(access_token, int(exp), from_cache=True)

    def _remember(self, key: str, credential: Credential, issued: IssuedToken) -> None:
        if issued.expires_at is None:
            return  # not a JWT: we cannot tell when it stops working
        ttl = issued.expires_at - self.config.token_expiry_margin - time.time()
        if ttl <= 0:
            return
        value = {"sealed": _seal(credential, "access", issued.access_token),
                 "expires_at": issued.expires_at}
        self._store_call(self.store.set, key, value, expire=ttl)

    @contextlib.contextmanager
    def _store_lock(self, key: str) -> Iterator[None]:
        """The store's lock on `key`; a store that cannot lock (disk full) only costs the
        cross-process guarantee, with one warning."""
        try:
            lock = self.store.lock(key, ttl=LOCK_TTL, wait=LOCK_WAIT)
            lock.__enter__()
        except (OSError, sqlite3.Error) as exc:
            self._warn(exc)
            yield
            return
        try:
            yield
        finally:
            with contextlib.suppress(OSError, sqlite3.Error):
                lock.__exit__(None, None, None)

    def _store_call(self, method, *args, **kwargs):
        """Run a store operation; a broken cache (disk full, a removed directory) costs logins."""
        try:
            return method(*args, **kwargs)
        except (OSError, sqlite3.Error) as exc:
            self._warn(exc)
            return None

    def _warn(self, exc: Exception) -> None:
        if not self._store_warned:
            self._store_warned = True
            log.warning("token cache unusable (%s); logging in without it", type(exc).__name__)


def _issued(result: auth.LoginResult) -> IssuedToken:
    exp = jwt_expiry(result.access_token)
    return IssuedToken(result.access_token, int(exp) if exp is not None else None,
                       result.session_token, result.refresh_token)


def _json_dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_loads(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


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
