"""Server-sent events out of the service: framing and the streaming Response."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from flask import Response, has_request_context, request

from .. import json_codec, stream_pump

DONE = b"data: [DONE]\n\n"


def event(data, name: str | None = None) -> bytes:
    """One SSE event carrying `data` (compact JSON unless already a string)."""
    payload = data.encode() if isinstance(data, str) else json_codec.dumps(data)
    head = f"event: {name}\n".encode() if name else b""
    return b"%sdata: %s\n\n" % (head, payload)


class Closable(Protocol):
    def close(self) -> None: ...


class EventStream(Response):
    """A streamed Response whose events (bytes, never str) go to the server as they are.

    werkzeug hands a server its streamed body through a generator that encodes str items and a
    ClosingIterator that runs close(): two Python frames resumed for every event, at each of the
    ~60 events of an answer. Here the server iterates the events themselves; `close()` is still
    the response's (it closes the events and runs call_on_close's callbacks).
    """

    def get_app_iter(self, environ: dict) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "HEAD" or self.status_code != 200:
            return super().get_app_iter(environ)
        return _Body(self)


class _Body:
    """The body a server iterates: the response's events, then the response's close()."""

    __slots__ = ("_response",)

    def __init__(self, response: Response):
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._response.response)

    def close(self) -> None:
        self._response.close()


def response(events: Iterable[bytes], source: Closable | None = None) -> Response:
    """A text/event-stream Response that no proxy may buffer.

    `source` (the Answer the events come from) is closed when the response is: also when the
    client went away before the first event, when the events generator never ran its cleanup.
    """
    streamed = EventStream(events, mimetype="text/event-stream", headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    if source is not None:
        streamed.call_on_close(source.close)
    if has_request_context():
        # These bodies wait only through Transfers and stream_pump: the worker may send them
        # from its stream pump (docs/stream-pump.md).
        request.environ[stream_pump.PUMPABLE] = True
    return streamed
