"""An answer being relayed: the one object every face reads, which owns the upstream stream.

`Answer.start()` runs the upstream call up to its first item before returning, so failures before
the first byte still surface as ordinary errors: a face can answer with a proper HTTP status, and
the account pool can try another account. After that the Answer relays the rest:

    with Answer.start(client, token, request, upstream) as answer:
        for delta in answer:          # TextDelta pieces only, in order
            ...
        answer.completion             # the one final Completion, once the deltas are exhausted

`read()` drains the deltas and returns the completion. An answer that ends without a completion
raises UpstreamError `upstream_stream_broken`. The Answer keeps its own books: it counts itself in
the streams-in-flight gauge from its start until `close()`, observes the time to the first text,
and counts upstream errors by code. `close()` is idempotent and ends the upstream transfer.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from types import TracebackType

from . import stream_pump
from .errors import ApiError, UpstreamError
from .metrics import STREAMS_IN_FLIGHT, TIME_TO_FIRST_TOKEN, UPSTREAM_ERRORS
from .upstream.conversation import ConversationClient, ConversationRequest
from .upstream.endpoints import Upstream
from .upstream.stream import Completion, TextDelta

Events = Iterator[TextDelta | Completion]


# Seconds between two looks at whether the caller of a non-streamed answer is still there.
ABANDON_CHECK = 0.5


class Answer:
    """The deltas of one answer, then its Completion; owns (and closes) the upstream events."""

    def __init__(self, events: Events, *, started: float | None = None):
        """Wrap `events` (TextDelta items, then one Completion), counted in flight until closed.

        `started` is when the request began (time.monotonic()), for the time-to-first-token.
        """
        self._events = events
        self._started = time.monotonic() if started is None else started
        self._ahead: list[TextDelta | Completion] = []
        self._seen_text = False
        self._completion: Completion | None = None
        self._exhausted = False
        self._closed = False
        self._on_complete: list[Callable[[Completion], None]] = []
        self._on_close: list[Callable[[], None]] = []
        STREAMS_IN_FLIGHT.inc()

    @classmethod
    def start(cls, client: ConversationClient, access_token: str, request: ConversationRequest,
              upstream: Upstream) -> Answer:
        """Begin `request` on `access_token` and read ahead to its first item.

        :raise ApiError: any failure before the first item (upstream_stream_broken when the
            upstream ends the answer before it began).
        """
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
        answer = cls(events, started=started)
        answer._ahead.append(first)
        return answer

    def on_complete(self, callback: Callable[[Completion], None]) -> None:
        """Call `callback(completion)` when the completion arrives (e.g. to pin a conversation)."""
        self._on_complete.append(callback)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call `callback()` when the answer is closed, complete or not (e.g. to give back what
        was held for it)."""
        self._on_close.append(callback)

    def __iter__(self) -> Iterator[TextDelta]:
        """The text pieces as the upstream sends them. :raise ApiError: the stream failed."""
        # One loop, no helper call per piece: this runs at every event of every stream.
        events = self._events
        while not self._exhausted:
            try:
                item = self._ahead.pop() if self._ahead else next(events, None)
            except ApiError as error:
                UPSTREAM_ERRORS.labels(error.code).inc()
                self.close()
                raise
            if isinstance(item, TextDelta):
                if not self._seen_text:
                    self._seen_text = True
                    TIME_TO_FIRST_TOKEN.observe(time.monotonic() - self._started)
                yield item
            elif item is None:
                self._exhausted = True
            else:
                self._complete(item)

    def _complete(self, completion: Completion) -> None:
        self._completion = completion
        for callback in self._on_complete:
            callback(completion)

    @property
    def completion(self) -> Completion:
        """The final Completion, once the deltas are exhausted.

        :raise UpstreamError: upstream_stream_broken when the answer ended without one.
        """
        if not self._exhausted:
            raise RuntimeError("read the answer's deltas (or call read()) before its completion")
        if self._completion is None:
            raise UpstreamError("the upstream answer ended without a result",
                                "upstream_stream_broken")
        return self._completion

    def read(self, abandoned: Callable[[], bool] | None = None) -> Completion:
        """Drain the answer and return its Completion (then close it).

        `abandoned()` is asked between pieces, at most every ABANDON_CHECK seconds: once it says
        the caller is gone, the upstream transfer is closed rather than read to its end.
        :raise ApiError: 499 client_gone in that case.

        In a gunicorn worker with a stream pump the pieces are read there, as a streamed
        answer's are (stream_pump.run): the calling thread waits once, not at every event.
        """
        return stream_pump.run(lambda: self._drain(abandoned))

    def _drain(self, abandoned: Callable[[], bool] | None) -> Completion:
        with self:
            next_check = time.monotonic() + ABANDON_CHECK
            for _ in self:
                if abandoned is not None and time.monotonic() >= next_check:
                    if abandoned():
                        raise ApiError("the client closed the connection before the answer "
                                       "was complete", "client_gone", status=499)
                    next_check = time.monotonic() + ABANDON_CHECK
            return self.completion

    def close(self) -> None:
        """End the upstream transfer and leave the in-flight count; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        STREAMS_IN_FLIGHT.dec()
        try:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
        finally:
            for callback in self._on_close:
                callback()

    def __enter__(self) -> Answer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
