"""What a JWT says, read without verifying it: the service only plans and names accounts with it.

Every answer asks (the account behind an access token, when it expires), and PyJWT's decode costs
about 50 µs to these functions' 12. Nothing here trusts a claim: a token is verified, where that
matters, by whoever issued it.
"""
from __future__ import annotations

import base64
import binascii

from . import json_codec


def payload(token: str) -> dict | None:
    """The claims of a three-part JWT-shaped token (its middle part, a base64url JSON object), or
    None; the header and signature are not looked at."""
    parts = token.split(".") if isinstance(token, str) else ()
    if len(parts) != 3:
        return None
    try:
        claims = json_codec.loads(_base64url(parts[1]))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


def unverified_claims(token: str) -> dict | None:
    """A JWT's claims as PyJWT's decode with verify_signature off reads them, or None if `token`
    is no JWT: three base64url parts, the first two JSON objects."""
    claims = payload(token)
    if claims is None:
        return None
    header, _, signature = token.split(".")
    try:
        header = json_codec.loads(_base64url(header))
        _base64url(signature)
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(header, dict) else None


def expiry(claims: dict | None) -> float | None:
    """The `exp` claim of `claims` (what payload() or unverified_claims() read) as unix seconds,
    or None when there is none."""
    exp = claims.get("exp") if claims is not None else None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


def _base64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part.encode("ascii") + b"=" * (-len(part) % 4))
