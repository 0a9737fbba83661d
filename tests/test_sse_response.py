"""The streamed Response of every SSE face (api/sse.py), as a WSGI server sees it.

The server iterates the events themselves (no per-event wrapper of werkzeug's), and closing the
body it was given still closes everything: the events generator and the Answer behind it, also
when the client left before the first event.
"""
from __future__ import annotations

import json

import pytest
from flask import Flask
from werkzeug.test import create_environ

from chatgpt_web.api import sse
from chatgpt_web.api.openai_compat import _Reply, _StreamedChoice


class Source:
    """Stands for the Answer: sse.response closes it with the response."""

    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1


def served(make_events, method="POST"):
    """(status, headers, body iterable) of the app's response, as a WSGI server gets them."""
    app = Flask(__name__)
    source, ran = Source(), []

    def events():
        try:
            yield from make_events()
        finally:
            ran.append("cleanup")

    @app.route("/stream", methods=["GET", "POST"])
    def stream():
        return sse.response(events(), source)

    started = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=dict(headers))

    body = app(create_environ("/stream", method=method), start_response)
    return started, body, source, ran


def test_the_server_iterates_the_events_bytes_as_they_are():
    started, body, source, ran = served(lambda: iter([b"data: 1\n\n", sse.DONE]))
    assert started["status"] == "200 OK"
    assert started["headers"]["Content-Type"].startswith("text/event-stream")
    assert started["headers"]["Cache-Control"] == "no-cache"
    assert started["headers"]["X-Accel-Buffering"] == "no"
    assert list(body) == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    body.close()
    assert source.closed == 1 and ran == ["cleanup"]


def test_closing_a_body_the_server_never_read_closes_the_answer():
    # The client left before the first event: the events generator never started, so only the
    # response's close() can end the Answer (and the upstream transfer it owns).
    _, body, source, ran = served(lambda: iter([b"data: 1\n\n"]))
    body.close()
    assert source.closed == 1 and ran == []


def test_closing_a_body_left_mid_stream_runs_the_generators_cleanup():
    _, body, source, ran = served(lambda: iter([b"data: 1\n\n", b"data: 2\n\n"]))
    events = iter(body)
    assert next(events) == b"data: 1\n\n"
    body.close()
    assert source.closed == 1 and ran == ["cleanup"]


def test_a_head_request_gets_no_body_and_still_closes_the_answer():
    _, body, source, _ = served(lambda: iter([b"data: 1\n\n"]), method="HEAD")
    assert list(body) == []
    body.close()
    assert source.closed == 1


class _Model:
    id = "gpt-4o"
    web_slug = "gpt-4o"


@pytest.mark.parametrize("include_usage", [False, True])
@pytest.mark.parametrize("text", [
    " word", "", 'quotes " and \\ backslashes', "line\nbreak\ttab\r", "\x00\x1f controls",
    "non-ASCII: é 中文 🙂", "\u2028\u2029 separators", '"content":"" inside the text',
])
def test_a_content_chunk_is_the_official_chunk_with_the_text(text, include_usage):
    reply = _Reply(_Model(), (), include_usage)
    choice = _StreamedChoice(reply, index=1)
    encoded = choice._content(text)
    # The same bytes as the general encoder gives, for every text (the first and later pieces).
    assert encoded == sse.event(reply.chunk({"content": text}, index=1))
    assert choice._content(text) == encoded
    chunk = json.loads(encoded.removeprefix(b"data: ").removesuffix(b"\n\n"))
    assert chunk["choices"] == [{"index": 1, "delta": {"content": text}, "logprobs": None,
                                 "finish_reason": None}]
    assert ("usage" in chunk) is include_usage
