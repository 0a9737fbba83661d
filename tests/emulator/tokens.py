"""Test access tokens: JWTs with the real claim layout (docs/protocol-auth.md), signed HS256.

The real tokens are RS256 from auth.openai.com; clients only decode them (never verify), so a
symmetric test key changes nothing they can observe except the `alg` header.
"""
from __future__ import annotations

import hashlib
import threading
import time
import uuid

import jwt

ISSUER = "https://auth.openai.com"
AUDIENCE = ["https://api.openai.com/v1"]
WEB_CLIENT_ID = "app_X8zY6vW2pQ9tR3dE7nK1jL5gH"
PROFILE_CLAIM = "https://api.openai.com/profile"
AUTH_CLAIM = "https://api.openai.com/auth"
SCOPE = ("openid email profile model.read model.request organization.read organization.write "
         "offline_access")


class TokenRejected(Exception):
    """The bearer token is not acceptable; `code` is "token_expired" or "invalid_token"."""

    def __init__(self, code: str, reason: str):
        super().__init__(reason)
        self.code = code


def mint(secret: bytes, *, exp_in: float = 3600, email: str = "user@example.com", **claims) -> str:
    """A signed token for `email`, valid `exp_in` seconds; `claims` override top-level claims."""
    now = int(time.time())
    account = hashlib.sha256(email.encode()).hexdigest()
    user_id = user_id_of(email)
    payload = {
        PROFILE_CLAIM: {"email": email, "email_verified": True},
        AUTH_CLAIM: {
            "user_id": user_id,
            "chatgpt_account_id": str(uuid.UUID(account[:32])),
            "chatgpt_user_id": user_id,
            "chatgpt_plan_type": "free",
        },
        "iss": ISSUER,
        "sub": f"auth0|{account[:24]}",
        "aud": AUDIENCE,
        "client_id": WEB_CLIENT_ID,
        "iat": now,
        "nbf": now,
        "exp": int(now + exp_in),
        "scope": SCOPE,
        **claims,
    }
    return jwt.encode(payload, secret, algorithm="HS256")


def verify(secret: bytes, token: str) -> dict:
    """The claims of a valid access token; raises TokenRejected otherwise."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE[0],
                            issuer=ISSUER, options={"require": ["exp", "iat"]})
    except jwt.ExpiredSignatureError:
        raise TokenRejected("token_expired", "the access token has expired") from None
    except jwt.PyJWTError as exc:
        raise TokenRejected("invalid_token", f"the access token is not valid: {exc}") from None
    # pandora's check: a real access token always carries both namespaced claims.
    if not all(isinstance(claims.get(name), dict) for name in (AUTH_CLAIM, PROFILE_CLAIM)):
        raise TokenRejected("invalid_token", "the access token lacks the OpenAI claims")
    return claims


class AcceptedTokens:
    """verify() for the bearer of every backend call, remembering the tokens it accepted.

    A token's signature, issuer, audience and claims cannot change, so an accepted token is
    only checked again for what time changes: its expiry (`exp`, as PyJWT checks it). Each
    answer's four calls carry the same token; decoding it once instead of four times is CPU the
    real site spends on its own machines, not on the one the service is measured on
    (bench/concurrency.py). Keyed by secret and token; bounded, the oldest forgotten first.
    """

    def __init__(self, size: int = 4096, clock=time.time):
        self.size = size
        self.clock = clock
        self._claims: dict[tuple[bytes, str], dict] = {}
        self._lock = threading.Lock()

    def verify(self, secret: bytes, token: str) -> dict:
        """The claims of a valid access token; raises TokenRejected otherwise, as verify()."""
        key = (secret, token)
        with self._lock:
            claims = self._claims.get(key)
        if claims is None:
            claims = verify(secret, token)
            with self._lock:
                self._claims[key] = claims
                while len(self._claims) > self.size:
                    del self._claims[next(iter(self._claims))]
        elif int(claims["exp"]) <= self.clock():
            raise TokenRejected("token_expired", "the access token has expired")
        return claims


def user_id_of(email: str) -> str:
    """The user id of the tokens minted for `email`."""
    return f"user-{hashlib.sha256(email.encode()).hexdigest()[:24]}"


def user_id(claims: dict) -> str:
    """The account a verified token belongs to; conversations are kept per account."""
    return claims[AUTH_CLAIM].get("user_id") or claims.get("sub", "")


def mint_resume_token(secret: bytes, conversation_id: str) -> str:
    """The opaque `resume_conversation_token` of a v1 stream (an ES256 JWT upstream)."""
    now = int(time.time())
    return jwt.encode({"conversation_id": conversation_id, "kind": "conduit", "iat": now,
                       "exp": now + 3600}, secret, algorithm="HS256")
