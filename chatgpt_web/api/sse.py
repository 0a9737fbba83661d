"""Server-sent events out of the service: framing and the streaming Response."""
from __future__ import annotations

import json
from collections.abc import Iterable

from flask import Response

DONE = b"data: [DONE]\n\n"


def event(data, name: str | None = None) -> bytes:
    """One SSE event carrying `data` (JSON-encoded unless already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {payload}\n\n".encode()


def response(events: Iterable[bytes]) -> Response:
    """A text/event-stream Response that no proxy may buffer."""
    return Response(events, mimetype="text/event-stream", headers={
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
