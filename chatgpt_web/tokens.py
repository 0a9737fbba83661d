"""Access tokens: reading a JWT's expiry without verifying it (the upstream verifies)."""
from __future__ import annotations

import time

import jwt

from .errors import Unauthorized


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
