"""What each fake key does, and the error answers the official API gives for them.

The texts copy the shapes of the official error answers, including the parts a relay must never
show its callers: a fragment of the key, an organisation id, and the billing sentence.
"""
from __future__ import annotations

ORGANIZATION = "org-FAKEorganization0123456789"
PROJECT = "proj_FAKEproject0123456789abcd"
GOOD, INVALID, QUOTA, RATELIMIT, ORG = "good", "invalid", "quota", "ratelimit", "org"


def kind_of(key: str | None) -> str | None:
    """The behaviour of `key` ("good", "invalid", ...) or None for a key the fake does not know."""
    if not key or not key.startswith("sk-fake-"):
        return None
    kind = key[len("sk-fake-"):].split("-", 1)[0]
    return kind if kind in (GOOD, INVALID, QUOTA, RATELIMIT, ORG) else None


def masked(key: str) -> str:
    """The key as the official API echoes it in a 401: first 8 and last 4 characters."""
    return key[:8] + "*" * max(4, len(key) - 12) + key[-4:]


def error(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def refusal(key: str | None, model: str, reset: float = 20.0) -> tuple[int, dict, dict] | None:
    """(status, body, headers) for a key that cannot serve, or None for a good key; a rate-limited
    key resets in `reset` seconds."""
    kind = kind_of(key)
    if kind == GOOD:
        return None
    if kind is None or kind == INVALID:
        shown = masked(key) if key else "(none)"
        return 401, error(f"Incorrect API key provided: {shown}. You can find your API key at "
                          "https://platform.openai.com/account/api-keys.",
                          "invalid_request_error", "invalid_api_key"), {}
    if kind == QUOTA:
        return 429, error("You exceeded your current quota, please check your plan and billing "
                          "details. For more information on this error, read the docs: "
                          "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                          "insufficient_quota", "insufficient_quota"), {}
    if kind == RATELIMIT:
        return 429, error(f"Rate limit reached for {model} in organization {ORGANIZATION} on "
                          "requests per min (RPM): Limit 3, Used 3, Requested 1. Please try "
                          f"again in {reset:g}s.", "requests", "rate_limit_exceeded"), {
            "x-ratelimit-limit-requests": "3", "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{reset:g}s",
            "retry-after-ms": str(int(reset * 1000))}
    return 500, error(f"The server had an error processing your request (organization "
                      f"{ORGANIZATION}). Sorry about that!", "server_error", None), {}
