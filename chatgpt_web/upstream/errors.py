"""The upstream's vocabulary translated into ours: the only place where its answers become errors.

`from_upstream()` classifies a non-success answer of the ChatGPT backend by two small tables (one
row per status, refined by the upstream's own code). `login_error()` does the same for the
outcomes of the login flows (upstream/auth.py decides which outcome a page means; the table here
alone decides how the caller hears it). Messages are cleaned of HTML and capped: they never carry
the caller's token, password or a page.
"""
from __future__ import annotations

import json
import re

from ..errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UpstreamError,
)

CLOUDFLARE_HINT = (
    "the upstream answered with a Cloudflare challenge page; this server's IP or TLS fingerprint "
    "is not trusted. Use a residential CHATGPT_PROXY, another CHATGPT_IMPERSONATE target, or a "
    "reverse_proxy"
)
SENTINEL_HINT = (
    "the upstream's anti-abuse check refused this request (\"Unusual activity has been detected "
    "from your device\"): the sentinel answers or this server's network were not trusted. Try a "
    "residential CHATGPT_PROXY, an account logged in with a session token, or another account"
)
_CLOUDFLARE_MARKERS = (b"cf_chl_opt", b"cf-please-wait", b"challenge-platform", b"Just a moment...")
_MAX_MESSAGE = 300


def is_cloudflare_page(body: bytes) -> bool:
    """True if `body` is a Cloudflare challenge page rather than an API answer."""
    head = body[:20000]
    return any(marker in head for marker in _CLOUDFLARE_MARKERS)


def _detail(body: bytes) -> tuple[str, str | None, dict]:
    """Pull (message, upstream code, detail dict) out of a JSON error body, tolerating any shape."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", None, {}
    if not isinstance(data, dict):
        return "", None, {}
    detail = data.get("detail", data.get("error", data))
    if isinstance(detail, str):
        return detail, None, {}
    if isinstance(detail, dict):
        message = detail.get("message") or detail.get("detail") or ""
        code = detail.get("code") or detail.get("type")
        return str(message), (str(code) if code else None), detail
    return "", None, {}


def _clean(message: str, fallback: str) -> str:
    message = re.sub(r"\s+", " ", message or "").strip()
    if not message or "<" in message[:50]:
        return fallback
    return message[:_MAX_MESSAGE]


def _retry_after(detail: dict, headers) -> float | None:
    clears_in = detail.get("clears_in")
    if isinstance(clears_in, (int, float)) and clears_in >= 0:
        return float(clears_in)
    header = (headers or {}).get("Retry-After") if headers is not None else None
    try:
        return float(header) if header is not None else None
    except (TypeError, ValueError):
        return None


# One row per upstream status: (error class, our code, fallback message).
_STATUS_TABLE: dict[int, tuple[type[ApiError], str, str]] = {
    400: (BadRequest, "upstream_bad_request", "the upstream rejected the request"),
    401: (Unauthorized, "invalid_token", "the access token was refused by the upstream"),
    403: (Forbidden, "upstream_forbidden", "the upstream refused the request"),
    404: (NotFound, "conversation_not_found", "conversation not found upstream"),
    409: (Conflict, "upstream_conflict", "the upstream reported a conflict"),
    413: (PayloadTooLarge, "prompt_too_long", "the message is too long for the upstream"),
    429: (RateLimited, "upstream_rate_limited", "the upstream rate limit was reached"),
}
# Upstream codes that refine the row above, whatever the status.
_CODE_TABLE: dict[str, tuple[type[ApiError], str]] = {
    "token_expired": (Unauthorized, "token_expired"),
    "invalid_jwt": (Unauthorized, "invalid_token"),
    "invalid_token": (Unauthorized, "invalid_token"),
    "invalid_api_key": (Unauthorized, "invalid_token"),
    "message_length_exceeds_limit": (PayloadTooLarge, "prompt_too_long"),
}


def from_upstream(status: int, body: bytes, headers=None) -> ApiError:
    """Classify a non-2xx upstream answer (status, raw body, response headers) as an ApiError."""
    if status in (403, 503) and is_cloudflare_page(body):
        return Forbidden(CLOUDFLARE_HINT, "cloudflare_challenge")
    if status == 422:
        return _unprocessable(body)
    message, upstream_code, detail = _detail(body)
    if status == 403 and "unusual activity" in message.lower():
        return Forbidden(SENTINEL_HINT, "upstream_sentinel_rejected")
    if upstream_code in _CODE_TABLE:
        cls, code = _CODE_TABLE[upstream_code]
        return cls(_clean(message, code.replace("_", " ")), code)
    if status == 429 or "too many requests" in message.lower():
        return RateLimited(_clean(message, _STATUS_TABLE[429][2]), "upstream_rate_limited",
                           retry_after=_retry_after(detail, headers))
    cls, code, fallback = _STATUS_TABLE.get(
        status, (UpstreamError, "upstream_error", f"the upstream answered HTTP {status}")
    )
    if cls is UpstreamError and not message:
        fallback = f"the upstream answered HTTP {status} with no usable error"
    return cls(_clean(message, fallback), code)


def _unprocessable(body: bytes) -> ApiError:
    """422: the upstream refused a field of what we sent (FastAPI's `detail` list names it). That
    is our request's fault, not the caller's: 502, naming the field."""
    field = reason = None
    try:
        problems = json.loads(body).get("detail")
        first = problems[0] if isinstance(problems, list) and problems else {}
        location = [str(part) for part in first.get("loc", []) if part != "body"]
        field = ".".join(location)[:100] or None
        reason = first.get("msg") if isinstance(first.get("msg"), str) else None
    except (ValueError, AttributeError, TypeError):
        pass
    message = (f"the upstream rejected the request field {field}" if field
               else "the upstream rejected the request as unprocessable")
    if reason:
        message += f": {_clean(reason, '')}"
    return UpstreamError(message, "upstream_bad_request", param=field)


# Outcomes of the login flows (upstream/auth.py): our code -> (error class, message).
# auth.py decides which outcome a page means; this table alone decides how the caller hears it.
_LOGIN_TABLE: dict[str, tuple[type[ApiError], str]] = {
    "invalid_credentials": (Unauthorized, "wrong email or password"),
    "mfa_required": (Unauthorized, "the account has two-factor authentication: pass the current "
                                   "one-time code as otp"),
    "invalid_otp": (Unauthorized, "the one-time code was refused"),
    "session_expired": (Unauthorized, "the session token has expired or was revoked; sign in "
                                      "again in the browser and copy the new cookie"),
    "refresh_token_invalid": (Unauthorized, "the refresh token has expired or was revoked"),
    "refresh_token_reused": (Unauthorized, "this refresh token was already used (each works "
                                           "once) and the provider revoked its whole family; "
                                           "sign in again"),
    "token_invalidated": (Unauthorized, "the backend refuses this account's access token "
                                        "(revoked or deactivated); sign in again"),
    "login_rate_limited": (RateLimited, "the identity provider is rate-limiting logins; try "
                                        "again later"),
    "login_failed": (UpstreamError, "the login flow met an unexpected answer"),
}


def login_error(code: str, step: str, reason: str | None = None, *,
                retry_after: float | None = None) -> ApiError:
    """The error for login outcome `code` at `step` ("login: password"); `reason` is our own short
    wording of what was wrong (e.g. "HTTP 500", "a Cloudflare challenge page"), never page text."""
    cls, message = _LOGIN_TABLE[code]
    text = f"{step}: {reason}" if reason else f"{step}: {message}"
    if cls is RateLimited:
        return RateLimited(text, code, retry_after=retry_after)
    return cls(text, code)
