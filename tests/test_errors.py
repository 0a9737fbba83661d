"""The one table that turns upstream answers into our errors."""
import json
import time

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
    (401, j({"detail": {"code": "invalid_jwt", "message": "bad"}}), errors.Unauthorized,
     "invalid_token"),
    (403, CLOUDFLARE_PAGE, errors.Forbidden, "cloudflare_challenge"),
    (403, j({"detail": "Unusual activity has been detected from your device. Try again later."}),
     errors.Forbidden, "upstream_sentinel_rejected"),
    (403, j({"detail": "Forbidden"}), errors.Forbidden, "upstream_forbidden"),
    (422, j({"detail": [{"loc": ["body", "thinking_effort"], "msg": "Input should be 'max'"}]}),
     errors.UpstreamError, "upstream_bad_request"),
    (422, b"unprocessable", errors.UpstreamError, "upstream_bad_request"),
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


def test_a_422_names_the_field_the_upstream_refused():
    error = from_upstream(422, j({"detail": [{"type": "enum", "loc": ["body", "thinking_effort"],
                                              "msg": "Input should be 'standard'"}]}), {})
    assert error.status == 502 and error.param == "thinking_effort"
    assert error.message == ("the upstream rejected the request field thinking_effort: "
                             "Input should be 'standard'")


def test_unusual_activity_gets_a_hint():
    error = from_upstream(403, j({"detail": "Unusual activity has been detected from your "
                                            "device. Try again later."}), {})
    assert error.status == 403 and "CHATGPT_PROXY" in error.message
    assert "session token" in error.message and "another account" in error.message


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


def test_seconds_left_is_the_time_to_the_deadline():
    left = errors.seconds_left(time.monotonic() + 30)
    assert 29 < left <= 30


def test_no_seconds_left_is_a_timeout_that_names_what_did_not_complete():
    with pytest.raises(errors.UpstreamTimeout) as caught:
        errors.seconds_left(time.monotonic())
    assert caught.value.code == "deadline_exceeded"
    assert caught.value.message == "the answer did not complete within the timeout"
    with pytest.raises(errors.UpstreamTimeout) as caught:
        errors.seconds_left(time.monotonic() - 1, "the file upload")
    assert caught.value.message == "the file upload did not complete within the timeout"
