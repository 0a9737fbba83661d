"""Start an answer so that failures before the first byte surface as ordinary errors.

`start_answer()` runs the upstream call up to its first item before returning; a face can then
still answer with a proper HTTP error status (and a pool can still try another account). After
that, the returned iterator relays the rest, recording time to first token and upstream errors.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

from .errors import ApiError, UpstreamError
from .metrics import TIME_TO_FIRST_TOKEN, UPSTREAM_ERRORS
from .upstream.conversation import ChatRequest, ConversationClient
from .upstream.endpoints import Upstream
from .upstream.stream import Completion, TextDelta

Answer = Iterator["TextDelta | Completion"]


def start_answer(client: ConversationClient, access_token: str, request: ChatRequest,
                 upstream: Upstream) -> Answer:
    """Begin relaying an answer; raises ApiError if it fails before its first item."""
    started = time.monotonic()
    events = client.stream(access_token, request, upstream)
    try:
        first = next(events)
    except StopIteration:
        raise UpstreamError("the upstream ended the answer before it began",
                            "upstream_stream_broken") from None
    except ApiError as error:
        UPSTREAM_ERRORS.labels(error.code).inc()
        raise
    if isinstance(first, TextDelta):
        TIME_TO_FIRST_TOKEN.observe(time.monotonic() - started)
    return _relay(first, events, started)


def _relay(first, events: Iterator, started: float) -> Answer:
    try:
        yield first
        seen_text = isinstance(first, TextDelta)
        for item in events:
            if not seen_text and isinstance(item, TextDelta):
                TIME_TO_FIRST_TOKEN.observe(time.monotonic() - started)
                seen_text = True
            yield item
    except ApiError as error:
        UPSTREAM_ERRORS.labels(error.code).inc()
        raise
    finally:
        events.close()


def collect(answer: Answer) -> Completion:
    """Drain an answer and return its final Completion."""
    completion = None
    for item in answer:
        if isinstance(item, Completion):
            completion = item
    if completion is None:
        raise UpstreamError("the upstream answer ended without a result", "upstream_stream_broken")
    return completion
