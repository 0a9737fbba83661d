"""Server-sent events of relay upstreams, as bytes: framing and the few tested changes.

Pure functions and one small splitter; no I/O, so their tests need no server. Events are kept as
the exact bytes received (including their blank-line terminator), so what passes unchanged is
byte-identical.
"""
from __future__ import annotations

import json

DONE = b"data: [DONE]"
PING = b": ping\n\n"
_SEPARATORS = (b"\n\n", b"\r\n\r\n", b"\r\r")


class EventSplitter:
    """Cuts a byte stream into complete events; keeps the incomplete tail for the next feed."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """The events completed by `data`, each with its terminator."""
        buffer = self._buffer + data if self._buffer else data
        if b"\r" not in buffer:  # the usual case: one separator, split in C
            *events, self._buffer = buffer.split(b"\n\n")
            return [event + b"\n\n" for event in events]
        events = []
        start = 0
        while True:
            ends = [(buffer.find(sep, start), sep) for sep in _SEPARATORS]
            ends = [(at, sep) for at, sep in ends if at >= 0]
            if not ends:
                break
            at, sep = min(ends)
            events.append(buffer[start:at + len(sep)])
            start = at + len(sep)
        self._buffer = buffer[start:]
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated."""
        return self._buffer


def data_of(event: bytes) -> bytes:
    """The joined `data:` lines of an event (b"" for a comment-only event)."""
    lines = event.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    data = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in lines]
    return b"\n".join(part for part in data if part is not None)


def is_comment(event: bytes) -> bool:
    """True for an event with no data (comments such as ': keep-alive', blank events)."""
    return not any(line.startswith((b"data:", b"event:")) for line in event.splitlines())


def is_done(event: bytes) -> bool:
    return data_of(event).strip() == b"[DONE]"


def error_of(event: bytes) -> dict | None:
    """The `error` object of an in-band error event (`data: {"error": {...}}`), else None."""
    data = data_of(event)
    if b'"error"' not in data:  # cheap test first: only error events are parsed
        return None
    try:
        decoded = json.loads(data)
    except ValueError:
        return None
    if isinstance(decoded, dict) and decoded.get("error"):
        error = decoded["error"]
        return error if isinstance(error, dict) else {"message": str(error)}
    return None


def finishes(data: bytes) -> bool:
    """True if these bytes carry a finish_reason (the answer is complete)."""
    return b'"finish_reason":"' in data or b'"finish_reason": "' in data


def is_usage_only(event: bytes) -> bool:
    """The final usage chunk of a chat stream (`choices: []` and a usage object)."""
    return b'"choices":[]' in event and b'"usage":{' in event


def may_hold_usage_only(data: bytes) -> bool:
    """False when none of the events in `data` can be the usage chunk (`is_usage_only`)."""
    return b'"choices":[]' in data


def strip_injected_usage(event: bytes) -> bytes | None:
    """An event as a client that did not ask for usage would get it: the usage-only chunk is
    dropped (None) and the `"usage":null` member the upstream added to other chunks removed.
    Also right for several whole events at once when none is the usage chunk."""
    if is_usage_only(event):
        return None
    return event.replace(b',"usage":null', b"")


def rename_model(event: bytes, upstream_name: bytes, public_name: bytes) -> bytes:
    """The body or event with the upstream's model name replaced by the public one.

    Upstreams answer with a dated snapshot of the name they were sent, so the whole value that
    starts with the upstream name is replaced: `"model":"deepseek-chat"` and
    `"model": "deepseek-chat-0324"` both become the public name. Only the first `model` member
    is changed (an answer names its model once, before any content).
    """
    for marker in (b'"model":"', b'"model": "'):
        at = event.find(marker + upstream_name)
        if at >= 0:
            start = at + len(marker)
            end = event.find(b'"', start + len(upstream_name))
            return event[:start] + public_name + event[end:]
    return event


def _usage_object(value) -> dict | None:
    usage = value.get("usage") if isinstance(value, dict) else None
    return usage if isinstance(usage, dict) else None


def usage_of_body(body: bytes) -> dict | None:
    """The `usage` object of a JSON answer, or None."""
    if b'"usage"' not in body:  # embeddings and images are large: parsed only when worth it
        return None
    try:
        return _usage_object(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return None


def usage_in(tail: bytes) -> dict | None:
    """The last `usage` object of the events in `tail` (the end of a stream), or None.

    Only a `data:` line that `tail` holds whole is read: an event cut at the start of the tail is
    skipped, as a stream without usage is.
    """
    end = len(tail)
    while (at := tail.rfind(b'"usage":{', 0, end)) >= 0:
        start = tail.rfind(b"data:", 0, at)
        stop = tail.find(b"\n", at)
        if start >= 0 and stop >= 0 and b"\n" not in tail[start:at]:
            try:
                usage = _usage_object(json.loads(tail[start + 5:stop]))
            except (ValueError, UnicodeDecodeError):
                usage = None
            if usage is not None:
                return usage
        end = at
    return None


def error_event(message: str, code: str) -> bytes:
    """The terminal event of a broken stream: an OpenAI error envelope the SDK raises."""
    body = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
