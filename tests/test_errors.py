"""The one table that turns upstream answers into our errors."""
import json

import pytest

from chatgpt_web import errors
from chatgpt_web.upstream.errors import from_upstream

CLOUDFLARE_PAGE = (b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
                   b"<script>window._cf_chl_opt={cvId: '2'};</script>"
                   b"<script src='/cdn-cgi/challenge-platform/h/b/orchestrate/jsch/v1'></script>")


def j(obj):
    return json.dumps(obj).encode()


@pytest.mark.parametrize("status, body, cls, code", [
    (401, j({"detail": {"code": "token_expired", "message": "Your token has expired"}}),
     errors.Unauthorized, "token_expired"),
    (401, j({"detail": {"code": "invalid_jwt", "message": "bad"}}), errors.Unauthorized, "invalid_token"),
    (403, CLOUDFLARE_PAGE, errors.Forbidden, "cloudflare_challenge"),
    (403, j({"detail": "Unusual activity"}), errors.Forbidden, "upstream_forbidden"),
    (404, j({"detail": "Conversation not found"}), errors.NotFound, "conversation_not_found"),
    (400, j({"detail": {"code": "message_length_exceeds_limit", "message": "too long"}}),
     errors.PayloadTooLarge, "prompt_too_long"),
    (429, b"rate-limit", errors.RateLimited, "upstream_rate_limited"),
    (500, b"Internal Server Error", errors.UpstreamError, "upstream_error"),
    (502, b"<html>bad gateway</html>", errors.UpstreamError, "upstream_error"),
])
def test_upstream_answer_maps_to_one_error(status, body, cls, code):
    error = from_upstream(status, body, {})
    assert type(error) is cls
    assert error.code == code
    assert "<" not in error.message


def test_rate_limit_retry_after_comes_from_clears_in():
    error = from_upstream(429, j({"detail": {"message": "cap", "clears_in": 41.2}}), {})
    assert error.status == 429 and error.headers["Retry-After"] == "42"


def test_rate_limit_retry_after_falls_back_to_header():
    error = from_upstream(429, b"slow down", {"Retry-After": "7"})
    assert error.headers["Retry-After"] == "7"


def test_cloudflare_error_never_quotes_the_page():
    error = from_upstream(403, CLOUDFLARE_PAGE, {})
    assert "cf_chl" not in error.message and "Just a moment" not in error.message
    assert "proxy" in error.message


def test_long_upstream_messages_are_capped():
    error = from_upstream(400, j({"detail": "x" * 5000}), {})
    assert len(error.message) <= 300


@pytest.mark.parametrize("body, headers", [
    (b'{"detail": {"message": "cap", "clears_in": Infinity}}', {}),
    (b'{"detail": {"message": "cap", "clears_in": 1e400}}', {}),
    (b'{"detail": "Too many requests"}', {"Retry-After": "inf"}),
    (b'{"detail": "Too many requests"}', {"Retry-After": "nan"}),
    (b'{"detail": "Too many requests"}', {"Retry-After": "1e12"}),
])
def test_an_endless_upstream_wait_is_reported_as_the_longest_wait(body, headers):
    error = from_upstream(429, body, headers)
    assert error.status == 429
    assert error.headers["Retry-After"] == str(errors.MAX_RETRY_AFTER)
