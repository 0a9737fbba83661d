"""The one table from upstream answers to what the relay does and what the caller hears.

`classify()` turns an upstream HTTP answer (status, headers, body), an in-band error event or a
transport failure into an `Outcome`: what it says about the upstream key (health.py acts on
`kind`), whether another key or target may still serve the request (`failover`), and the error
the caller gets should this be the last attempt. Errors caused by our own keys (refused, out of
quota) never show the upstream's text about the key: the caller did nothing wrong and sees 503
`upstream_unavailable`. Every message that is passed on is scrubbed first.

    status / code                          kind      failover  caller (if last)
    2xx                                    ok        -         the answer
    400 413 422 other 4xx                  client    no        same status, type/code/param kept
    401, 403, invalid_api_key ...          disable   yes       503 upstream_unavailable
    429/403 insufficient_quota, billing    disable   yes       503 upstream_unavailable
    429 otherwise                          rate      yes       429 upstream_rate_limited
    404 model_not_found                    model     yes       404 model_not_found (public name)
    5xx, in-band error, HTML, bad JSON     soft      yes       502/503 upstream_error ...
    empty stream                           soft      yes       502 upstream_empty_answer
    connect failure                        soft      yes       502 upstream_unreachable
    timeout                                soft      no        504 upstream_timeout
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from ..errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)

OK, CLIENT, DISABLE, RATE, MODEL, SOFT = "ok", "client", "disable", "rate", "model", "soft"
_KEY_CODES = {"invalid_api_key", "account_deactivated", "invalid_organization",
              "organization_deactivated", "no_such_organization"}
_QUOTA_CODES = {"insufficient_quota", "billing_not_active", "credit_balance_exhausted",
                "billing_hard_limit_reached", "quota_exceeded"}
_CLIENT_CLASSES = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                   409: Conflict, 413: PayloadTooLarge, 422: BadRequest}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_MESSAGE = 500


@dataclass
class Outcome:
    """What one attempt came to."""

    kind: str
    failover: bool
    error: ApiError | None = None
    retry_after: float | None = None  # seconds until this key may serve again (rate limits)
    reason: str | None = None  # an error code for the key's health record (never a message)


def parse_duration(value: str) -> float | None:
    """Seconds in an OpenAI reset header: "20s", "1.5s", "6m0s", "120ms", or a bare number."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def retry_after(headers: dict[str, str]) -> float | None:
    """Seconds to wait: retry-after-ms, Retry-After (seconds or a date), else the reset headers."""
    if "retry-after-ms" in headers:
        seconds = parse_duration(headers["retry-after-ms"])
        if seconds is not None:
            return seconds / 1000
    if "retry-after" in headers:
        value = headers["retry-after"]
        seconds = parse_duration(value)
        if seconds is not None:
            return seconds
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            pass
    resets = [parse_duration(headers[name]) for name in
              ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens") if name in headers]
    resets = [r for r in resets if r is not None]
    return max(resets) if resets else None


def error_detail(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, code, param) of an OpenAI-style error body, tolerating other shapes."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "", None, None, None
    error = data.get("error", data) if isinstance(data, dict) else None
    if isinstance(error, str):
        return error, None, None, None
    if not isinstance(error, dict):
        return "", None, None, None
    def text(name):
        value = error.get(name)
        return str(value) if value not in (None, "") else None
    return text("message") or "", text("type"), text("code"), text("param")


def unavailable(message: str = "no upstream can serve this request now",
                retry: float | None = None, final: bool = False) -> ServiceUnavailable:
    """503 upstream_unavailable; `final`: waiting will not help (x-should-retry: false)."""
    headers = {}
    if retry is not None:
        headers.update(_wait_headers(retry))
    if final:
        headers["x-should-retry"] = "false"
    return ServiceUnavailable(message, "upstream_unavailable", headers=headers)


def _wait_headers(seconds: float) -> dict[str, str]:
    seconds = max(0.0, seconds)
    return {"Retry-After": str(max(1, int(seconds + 0.999))),
            "retry-after-ms": str(int(seconds * 1000))}


def rate_limited(seconds: float | None) -> RateLimited:
    error = RateLimited("the upstream rate limit was reached; try again later",
                        "upstream_rate_limited")
    if seconds is not None:
        error.headers.update(_wait_headers(seconds))
    return error


def _client_error(status: int, message: str, type_: str | None, code: str | None,
                  param: str | None) -> ApiError:
    cls = _CLIENT_CLASSES.get(status, BadRequest)
    return cls(message or f"the upstream refused the request (HTTP {status})",
               code or (type_ or "upstream_bad_request"), param=param, status=status)


def classify(status: int, headers: dict[str, str], body: bytes, *, scrub, public_model: str,
             upstream_model: str | None) -> Outcome:
    """The outcome of an upstream HTTP answer (see the table in this module's docstring)."""
    if 200 <= status < 300:
        return Outcome(OK, False)
    message, type_, code, param = error_detail(body)
    message = scrub(message)[:_MAX_MESSAGE]
    if upstream_model and upstream_model != public_model:
        message = message.replace(upstream_model, public_model)
    if status == 403 and not (type_ or code or message):
        # An HTML page (a CDN's challenge) or a bare 403 from something in front of the API.
        return Outcome(SOFT, True, UpstreamError("the upstream refused the connection",
                                                 "upstream_bad_answer"))
    if code in _QUOTA_CODES or type_ in _QUOTA_CODES:
        return Outcome(DISABLE, True, unavailable(), reason="insufficient_quota")
    if status in (401, 403) and (code in _KEY_CODES or status == 401 or
                                 not message or "api key" in message.lower()):
        return Outcome(DISABLE, True, unavailable(), reason=code or f"http_{status}")
    if status == 429:
        wait = retry_after(headers)
        return Outcome(RATE, True, rate_limited(wait), wait, reason="rate_limited")
    if status == 404 and code == "model_not_found":
        error = NotFound(f"The model `{public_model}` does not exist or you do not have access "
                         "to it.", "model_not_found", param="model")
        return Outcome(MODEL, True, error)
    if 400 <= status < 500:
        return Outcome(CLIENT, False, _client_error(status, message, type_, code, param))
    error = (ServiceUnavailable if status in (503, 529) else UpstreamError)(
        f"the upstream failed (HTTP {status})", "upstream_error")
    wait = retry_after(headers)
    if wait is not None:
        error.headers.update(_wait_headers(wait))
    return Outcome(SOFT, True, error)


def classify_event_error(error: dict, *, scrub) -> Outcome:
    """The outcome of an in-band error sent as the first event of a stream."""
    body = json.dumps({"error": error}).encode()
    code, type_ = str(error.get("code") or ""), str(error.get("type") or "")
    status = error.get("status") if isinstance(error.get("status"), int) else None
    if code in _QUOTA_CODES or code in _KEY_CODES:
        status = 401
    elif code in ("rate_limit_exceeded",) or type_ in ("rate_limit_error", "requests", "tokens"):
        status = 429
    return classify(status or 503, {}, body, scrub=scrub, public_model="", upstream_model=None)


def bad_answer() -> Outcome:
    """A 2xx whose body is not what the endpoint answers (an HTML page, broken JSON)."""
    return Outcome(SOFT, True, UpstreamError("the upstream answered with something that is not "
                                             "an API answer", "upstream_bad_answer"))


def empty_stream() -> Outcome:
    return Outcome(SOFT, True, UpstreamError("the upstream stream ended before any answer",
                                             "upstream_empty_answer"))


def transport(kind: str) -> Outcome:
    """A failure below HTTP: connect (fail over), timeout (do not: the work may be billed)."""
    if kind == "timeout":
        return Outcome(SOFT, False, UpstreamTimeout("the upstream did not answer in time",
                                                    "upstream_timeout"))
    if kind == "connect":
        return Outcome(SOFT, True, UpstreamError("could not connect to the upstream",
                                                 "upstream_unreachable"))
    return Outcome(SOFT, True, UpstreamError("the upstream connection broke",
                                             "upstream_stream_broken"))
