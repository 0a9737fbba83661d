"""Request ids, the one access line per request, and redaction of server log lines."""
import logging
import re

import pytest
from flask import Response

from chatgpt_web import create_app
from chatgpt_web.observability import (
    MAX_REQUEST_ID_LENGTH,
    ResponseAborted,
    redact,
    request_id_from,
)


@pytest.fixture
def ops_app(tmp_path):
    """The real app (no upstream needed) plus two streaming routes to watch streams end."""
    app = create_app({"CACHE_DIR": str(tmp_path / "cache")})

    def pieces():
        yield b"one "
        yield b"two"

    def broken():
        yield b"data: first\n\n"
        raise KeyError("sk-planted-in-exception-text")

    app.add_url_rule("/test/stream", "test_stream", lambda: Response(pieces()))
    app.add_url_rule("/test/broken", "test_broken", lambda: Response(broken()))
    return app


@pytest.fixture
def access_lines(caplog):
    caplog.set_level(logging.DEBUG)

    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "chatgpt_web.access"]
    return lines


def test_a_request_id_is_generated_when_none_is_given(ops_app):
    first = ops_app.test_client().get("/healthz").headers["X-Request-ID"]
    second = ops_app.test_client().get("/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second


@pytest.mark.parametrize("given, used", [
    ("abc-123", "abc-123"),
    ("trace:7.9_x", "trace:7.9_x"),
    ("evil Set-Cookie: x=1", "evilSet-Cookie:x1"),
    ("a" * 500, "a" * MAX_REQUEST_ID_LENGTH),
])
def test_the_callers_request_id_is_kept_sanitized_and_capped(ops_app, given, used):
    response = ops_app.test_client().get("/healthz", headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] == used
    assert request_id_from(given) == used


def test_line_breaks_cannot_reach_a_log_line_or_header():
    assert request_id_from("evil\r\nforged=1") == "evilforged1"


def test_an_id_with_nothing_usable_is_replaced(ops_app):
    response = ops_app.test_client().get("/healthz", headers={"X-Request-ID": "<>\"'"})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


@pytest.mark.parametrize("method, path, status", [
    ("GET", "/", 200), ("GET", "/nowhere", 404), ("DELETE", "/healthz", 405),
    ("POST", "/send_message", 400),
])
def test_every_response_carries_an_id_even_errors(ops_app, method, path, status):
    response = ops_app.test_client().open(path, method=method)
    assert response.status_code == status
    assert len(response.headers.getlist("X-Request-ID")) == 1


def test_one_access_line_per_request_names_the_rule_not_the_path(ops_app, access_lines):
    client = ops_app.test_client()
    client.get("/healthz?access_token=sk-planted-query", headers={"X-Request-ID": "r1"},
               buffered=True)
    client.get("/sk-planted-path", headers={"X-Request-ID": "r2"}, buffered=True)
    lines = access_lines()
    assert len(lines) == 2
    assert re.fullmatch(r"request_id=r1 method=GET route=/healthz status=200 outcome=ok "
                        r"first_byte_ms=\d+\.\d duration_ms=\d+\.\d", lines[0])
    assert "request_id=r2" in lines[1] and "route=<unmatched> status=404" in lines[1]
    assert "planted" not in " ".join(lines)


def test_a_stream_is_logged_when_it_ends(ops_app, access_lines):
    response = ops_app.test_client().get("/test/stream", buffered=False)
    assert access_lines() == []  # headers are out, the body is not
    assert response.get_data() == b"one two"
    response.close()
    [line] = access_lines()
    assert "route=/test/stream status=200 outcome=ok" in line


def test_a_stream_closed_early_is_logged_incomplete(ops_app, access_lines):
    response = ops_app.test_client().get("/test/stream", buffered=False)
    next(response.response)
    response.close()
    [line] = access_lines()
    assert "outcome=incomplete" in line


def test_an_exception_inside_a_stream_is_reduced_to_its_type(ops_app, access_lines, caplog):
    response = ops_app.test_client().get("/test/broken", buffered=False)
    with pytest.raises(ResponseAborted) as caught:
        response.get_data()
    response.close()
    assert caught.value.__suppress_context__ and str(caught.value) == ""
    [line] = access_lines()
    assert "outcome=aborted" in line and line.endswith("error=KeyError")
    assert "planted" not in caplog.text


@pytest.mark.parametrize("message, expected", [
    ("Error handling request /send_message?access_token=sk-1&prompt=hi",
     "Error handling request /send_message?<redacted>"),
    ("Error handling request POST /?password=hunter2",
     "Error handling request POST /?<redacted>"),
    ("Invalid request from ip=127.0.0.1: Invalid HTTP request line: 'GET /x?t=sk-1 HTTP/1.1 junk'",
     "Invalid request from ip=127.0.0.1: Invalid HTTP request line: '<redacted>'"),
    ("code 400, message Bad request syntax ('GET /a b?token=sk-1 HTTP/1.1')",
     "code 400, message Bad request syntax (<redacted>)"),
    ("Booting worker with pid: 12", "Booting worker with pid: 12"),
    ("Is this a question? Yes", "Is this a question? Yes"),
])
def test_redact_removes_query_strings_and_raw_request_lines(message, expected):
    assert redact(message) == expected
