"""The service's errors: one small hierarchy, which every layer raises and the faces render.

    ApiError                     (status, code, message, param, headers)
     +-- BadRequest              400  invalid_request, missing_field, invalid_field, ...
     +-- ContentBlocked          400  content_blocked (the upstream moderation withheld the answer)
     +-- Unauthorized            401  token_expired, invalid_token, invalid_credentials,
     |                                mfa_required, invalid_otp, session_expired,
     |                                refresh_token_invalid
     +-- Forbidden               403  cloudflare_challenge, sentinel_required, pow_failed, ...
     +-- NotFound                404  conversation_not_found, not_found
     +-- Conflict                409  conversation_account_gone
     +-- PayloadTooLarge         413  prompt_too_long, file_too_large
     +-- UnsupportedMediaType    415  unsupported_file_type
     +-- RateLimited             429  upstream_rate_limited, login_rate_limited, rate_limited
     |                                (+ Retry-After)
     +-- UpstreamError           502  upstream_error, upstream_stream_broken, upstream_unreachable,
     |                                login_failed, ...
     +-- ServiceUnavailable      503  no_account_available, store_unavailable (REDIS_URL
     |                                unreachable)
     +-- UpstreamTimeout         504  deadline_exceeded
    ConfigError                  a bad environment variable; raised at start-up, never per request

This module knows no foreign vocabulary. Each one is translated in one place beside the code
that speaks it: curl's exceptions in transport.py (`upstream_errors`; its WebSocket's in
ws_client.py), the ChatGPT backend's answers and the login flows' outcomes in upstream/errors.py.
Messages never carry the caller's token, password or an HTML page.

`seconds_left()` is the one check of an upstream call's deadline: the timeout to give the next
call, or UpstreamTimeout once there is none.
"""
from __future__ import annotations

import math
import time


class ConfigError(ValueError):
    """A configuration value is missing or malformed."""


class ApiError(Exception):
    """An error that becomes the JSON answer `{"message", "code"}` with `status`.

    Everything is given at construction: `param` names the request field at fault (shown by the
    OpenAI-compatible face), `status` overrides the class's only for errors that have no class of
    their own (an HTTP error of the web framework, see `from_http_exception`).
    """

    status = 500
    code = "internal_error"
    param: str | None = None

    def __init__(self, message: str, code: str | None = None, *, param: str | None = None,
                 status: int | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if param is not None:
            self.param = param
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    @classmethod
    def from_http_exception(cls, error) -> ApiError:
        """A werkzeug HTTPException (404 unknown URL, 405 wrong method...) as one of ours: its
        status, its name as the code ("method_not_allowed")."""
        code = (error.name or "error").lower().replace(" ", "_")
        return cls(error.description or error.name, code, status=error.code or 500)

    def to_dict(self) -> dict:
        """The JSON body of this error."""
        return {"message": self.message, "code": self.code}


class BadRequest(ApiError):
    status, code = 400, "invalid_request"


class ContentBlocked(ApiError):
    status, code = 400, "content_blocked"


class Unauthorized(ApiError):
    status, code = 401, "invalid_token"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "prompt_too_long"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_file_type"


# The longest wait we pass on: an upstream's clears_in or Retry-After beyond a day (or infinite,
# or not a number) is not a schedule anyone can keep, so it is reported as this.
MAX_RETRY_AFTER = 86_400


class RateLimited(ApiError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, code: str | None = None, *, retry_after: float | None = None,
                 param: str | None = None, headers: dict | None = None):
        headers = dict(headers or {})
        self.retry_after = None
        if retry_after is not None:
            if not math.isfinite(retry_after) or retry_after > MAX_RETRY_AFTER:
                retry_after = MAX_RETRY_AFTER  # infinity or NaN would make ceil() raise
            self.retry_after = max(1, math.ceil(retry_after))
            headers["Retry-After"] = str(self.retry_after)
        super().__init__(message, code, param=param, headers=headers)


class UpstreamError(ApiError):
    status, code = 502, "upstream_error"


class ServiceUnavailable(ApiError):
    status, code = 503, "service_unavailable"


class UpstreamTimeout(ApiError):
    status, code = 504, "deadline_exceeded"


def seconds_left(deadline: float, what: str = "the answer") -> float:
    """The seconds until `deadline` (time.monotonic()), the timeout to give the next upstream call.

    :raise UpstreamTimeout: none are left: `what` did not complete in time.
    """
    left = deadline - time.monotonic()
    if left <= 0:
        raise UpstreamTimeout(f"{what} did not complete within the timeout")
    return left
