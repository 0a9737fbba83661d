"""Server-sent events out of the service: framing and the streaming Response."""
from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Protocol

from flask import Response

DONE = b"data: [DONE]\n\n"


def event(data, name: str | None = None) -> bytes:
    """One SSE event carrying `data` (JSON-encoded unless already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {payload}\n\n".encode()


class Closable(Protocol):
    def close(self) -> None: ...


def response(events: Iterable[bytes], source: Closable | None = None) -> Response:
    """A text/event-stream Response that no proxy may buffer.

    `source` (the Answer the events come from) is closed when the response is: also when the
    client went away before the first event, when the events generator never ran its cleanup.
    """
    streamed = Response(events, mimetype="text/event-stream", headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    if source is not None:
        streamed.call_on_close(source.close)
    return streamed
