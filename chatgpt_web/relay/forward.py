"""The attempt loop and the honest pipe: a caller's request to the first upstream key that serves.

`Relay.forward()` tries usable keys in the router's order until one gives a real answer, then
commits (sends our status line and headers) and passes the answer on:

* JSON answers are read whole, classified (outcomes.py) and passed on byte for byte;
* binary answers (speech) are committed at the upstream's headers and piped chunk by chunk;
* SSE answers are read until their first real event: an in-band error or an empty stream still
  fails over. After commit, bytes pass as received, with `: ping` comments during silences of
  RELAY_PING_INTERVAL; a stream that breaks, stalls for RELAY_IDLE_TIMEOUT or outlives
  RELAY_TOTAL_TIMEOUT ends with an error event, never with a made-up `[DONE]`. An upstream that
  ends after a finish_reason without `[DONE]` gets one appended (the answer was complete).

The only changes to what passes (each tested): the request's `model` when a route renames it (a
JSON member, or a multipart field: multipart.py) and `stream_options.include_usage` asked of
upstreams marked `stream_usage`; in the answer, the model name renamed back, the usage chunk and
`"usage":null` members removed when the caller did not ask for usage, error texts scrubbed, and
only allow-listed upstream headers.
"""
from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Response

from ..curl_transfer import END_OF_BODY_WAIT
from ..errors import ApiError
from ..metrics import RELAY_ATTEMPTS, RELAY_BROKEN_STREAMS, RELAY_OVERHEAD
from . import events, multipart, outcomes
from .routing import Attempt, Router
from .scrub import Scrubber, client_headers
from .wire import Exchange, TransportFailure

log = logging.getLogger(__name__)
MAX_ANSWER_BYTES = 64 * 1024 * 1024
MAX_ERROR_BYTES = 1024 * 1024
# The end of a stream kept to read its usage chunk from (the chunk is small and comes last).
USAGE_TAIL_BYTES = 8192


@dataclass
class RelayRequest:
    """What the caller sent to a relay endpoint, held to be replayed on each attempt."""

    path: str  # after /v1, e.g. "/chat/completions"
    body: bytes
    content_type: str
    model: str  # the public name asked for
    stream: bool = False
    json: dict | None = None
    binary: bool = False  # the answer is a binary body to pipe (speech)
    own_key: str | None = None  # the caller's upstream key (RELAY_BYOK): never stored or logged
    # A multipart body's `model` field as sent (None: it has none, the model is a default).
    form_model: str | None = None
    # Called once with the answer's `usage` object (None when the upstream gave none) when the
    # answer is complete, before its last bytes reach the caller (the usage ledger).
    on_complete: Callable[[dict | None], None] | None = None
    # Called when a committed stream ends broken, before its error event goes out.
    on_broken: Callable[[], None] | None = None
    # time.monotonic() when the service received the request (x-chatgpt-web-overhead-ms).
    started: float | None = None

    @property
    def wants_usage(self) -> bool:
        options = (self.json or {}).get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True


@dataclass
class Timeouts:
    connect: float = 10.0
    commit_after: float = 20.0
    ping: float = 15.0
    idle: float = 300.0
    total: float = 600.0


class Relay:
    """Runs relay requests against the router's keys; keeps their health."""

    def __init__(self, router: Router, scrubber: Scrubber, timeouts: Timeouts,
                 max_attempts: int = 3, ca_directory: str | None = None):
        self.router = router
        self.ca_directory = ca_directory  # CHATGPT_CA_DIR (wire.Exchange)
        self.health = router.health
        self.scrubber = scrubber
        self.timeouts = timeouts
        self.max_attempts = max_attempts

    # --- the request sent upstream -------------------------------------------------------------
    def _body_for(self, request: RelayRequest, attempt: Attempt) -> tuple[bytes, bool]:
        """(the body to send, whether usage was injected)."""
        if request.json is None:  # multipart: only its `model` field may change
            if request.form_model == attempt.model:
                return request.body, False
            return multipart.with_field(request.body, request.content_type, "model",
                                        attempt.model), False
        changes = {}
        if attempt.model != request.json.get("model"):
            changes["model"] = attempt.model
        inject = (request.stream and request.path == "/chat/completions"
                  and attempt.upstream.stream_usage and not request.wants_usage)
        if inject:
            options = request.json.get("stream_options")
            changes["stream_options"] = {**(options if isinstance(options, dict) else {}),
                                         "include_usage": True}
        if not changes:
            return request.body, False
        return json.dumps({**request.json, **changes}).encode(), inject

    def _open(self, request: RelayRequest, attempt: Attempt, body: bytes,
              deadline: float) -> Exchange:
        secret = request.own_key if request.own_key is not None else attempt.key.secret
        headers = [("Content-Type", request.content_type), ("Accept-Encoding", "identity"),
                   *attempt.upstream.headers]
        if secret:
            headers.append(("Authorization", f"Bearer {secret}"))
        return Exchange("POST", attempt.upstream.base_url + request.path, body=body,
                        headers=headers, proxy=attempt.upstream.proxy,
                        connect_timeout=self.timeouts.connect,
                        total_timeout=max(0.001, deadline - time.monotonic()),
                        ca_directory=self.ca_directory)

    # --- the loop ------------------------------------------------------------------------------
    def forward(self, request: RelayRequest, attempts: Iterator[Attempt], targets: list,
                timeout: float | None = None) -> Response:
        """The caller's answer from the first key that serves, within RELAY_TOTAL_TIMEOUT (or
        `timeout`, when shorter). :raise ApiError: none did."""
        deadline = time.monotonic() + min(self.timeouts.total, timeout or self.timeouts.total)
        scrub = self._scrub_for(request)
        last: outcomes.Outcome | None = None
        tried = 0
        upstream_time = 0.0  # spent waiting on upstreams: the rest is the service's overhead
        for attempt in attempts:
            if tried >= self.max_attempts or time.monotonic() >= deadline:
                break
            tried += 1
            began = time.monotonic()
            outcome, response = self._try(request, attempt, deadline, scrub)
            upstream_time += time.monotonic() - began
            RELAY_ATTEMPTS.labels(attempt.upstream.name, outcome.kind).inc()
            streaming = response is not None and response.mimetype == "text/event-stream"
            if request.own_key is None and not streaming:  # a stream records its own end
                self.health.record(attempt.upstream.name, attempt.key.id, outcome,
                                   attempt.model, attempt.state)
            if response is not None:
                response.headers["x-chatgpt-web-attempts"] = str(tried)
                if request.started is not None:
                    overhead = max(0.0, time.monotonic() - request.started - upstream_time)
                    response.headers["x-chatgpt-web-overhead-ms"] = f"{overhead * 1000:.1f}"
                    RELAY_OVERHEAD.observe(overhead)
                return response
            last = outcome
            if not outcome.failover:
                break
            log.info("relay: %s key %s failed over (%s)", attempt.upstream.name, attempt.key.id,
                     outcome.error.code if outcome.error else outcome.kind)
        raise self._final_error(last, tried, targets, request.model)

    def _final_error(self, last: outcomes.Outcome | None, tried: int, targets,
                     model: str) -> ApiError:
        """What the caller hears when no attempt served (see the table in outcomes.py)."""
        if last is not None and (not last.failover or last.kind in (outcomes.MODEL,
                                                                    outcomes.SOFT)):
            return last.error
        until, all_disabled, rate = self.router.blocked_until(targets, model)
        wait = max(0.0, until - time.time()) if until is not None else None
        if last is not None and last.kind == outcomes.RATE or last is None and rate:
            return outcomes.rate_limited(wait)
        message = (f"no upstream could serve this request ({tried} tried)" if tried
                   else "no upstream key can serve this request now")
        return outcomes.unavailable(message, retry=None if all_disabled else wait,
                                    final=all_disabled)

    def _scrub_for(self, request: RelayRequest):
        if request.own_key:
            extra = Scrubber([request.own_key])
            return lambda text: extra.text(self.scrubber.text(text))
        return self.scrubber.text

    def _try(self, request: RelayRequest, attempt: Attempt, deadline: float,
             scrub) -> tuple[outcomes.Outcome, Response | None]:
        body, injected = self._body_for(request, attempt)
        exchange = None
        try:
            exchange = self._open(request, attempt, body, deadline)
            head_by = deadline
            if request.stream:
                head_by = min(deadline, time.monotonic() + self.timeouts.connect
                              + self.timeouts.commit_after)
            if not exchange.wait_head(max(0.0, head_by - time.monotonic())):
                exchange.close()
                return outcomes.transport("timeout"), None
            # Streams: the first event is awaited this long before the answer is committed.
            commit_by = min(deadline, time.monotonic() + self.timeouts.commit_after)
            status, headers = exchange.status or 0, exchange.headers
            content_type = headers.get("content-type", "")
            if status != 200 or not (request.binary or request.stream):
                limit = MAX_ANSWER_BYTES if status == 200 else MAX_ERROR_BYTES
                answer = exchange.read_all(limit, max(0.0, deadline - time.monotonic()))
                exchange.close()
                outcome = outcomes.classify(status, headers, answer, scrub=scrub,
                                            public_model=request.model,
                                            upstream_model=attempt.model)
                if outcome.kind == outcomes.OK:
                    if "json" in content_type and not _is_json(answer):
                        return outcomes.bad_answer(), None
                    if "html" in content_type and "json" not in request.content_type:
                        return outcomes.bad_answer(), None
                    if attempt.model != request.model and "json" in content_type:
                        answer = events.rename_model(answer, attempt.model.encode(),
                                                     request.model.encode())
                    if request.on_complete is not None:
                        request.on_complete(events.usage_of_body(answer))
                    return outcome, Response(answer, status, headers=client_headers(headers))
                return outcome, None
            if request.binary:
                pipe = self._pipe_bytes(exchange, b"", deadline, request.on_complete)
                return outcomes.Outcome(outcomes.OK, False), Response(
                    pipe, 200, headers=client_headers(headers))
            if "text/event-stream" not in content_type:
                answer = exchange.read_all(MAX_ANSWER_BYTES, max(0.0, deadline - time.monotonic()))
                exchange.close()
                if not _is_json(answer):
                    return outcomes.bad_answer(), None
                if request.on_complete is not None:
                    request.on_complete(events.usage_of_body(answer))
                return outcomes.Outcome(outcomes.OK, False), Response(
                    answer, 200, headers=client_headers(headers))
            return self._commit_stream(request, attempt, exchange, injected, commit_by,
                                       deadline, scrub)
        except TransportFailure as failure:
            if exchange is not None:
                exchange.close()
            return outcomes.transport(failure.kind), None
        except BaseException:
            if exchange is not None:
                exchange.close()
            raise

    # --- streams -------------------------------------------------------------------------------
    def _commit_stream(self, request, attempt, exchange, injected, commit_by, deadline, scrub):
        """Read to the first real event; fail over on an in-band error or an empty stream."""
        splitter = events.EventSplitter()
        held: list[bytes] = []
        while True:
            chunk = exchange.read(max(0.0, commit_by - time.monotonic()))
            if chunk is None:
                break  # slow first event: commit now, keep the answer alive with pings
            if chunk == b"":
                exchange.close()
                return outcomes.empty_stream(), None
            first_real = None
            for event in splitter.feed(chunk):
                held.append(event)
                if first_real is None and not events.is_comment(event):
                    first_real = event
            if first_real is not None:
                error = events.error_of(first_real)
                if error is not None:
                    exchange.close()
                    return outcomes.classify_event_error(error, scrub=scrub), None
                if events.is_done(first_real):
                    exchange.close()
                    return outcomes.empty_stream(), None
                break
        held_bytes = b"".join(e for e in held if not events.is_comment(e)) + splitter.pending
        transform = _Transform(request, attempt, injected)
        pipe = self._pipe_events(exchange, held_bytes, transform, attempt, request, deadline,
                                 scrub)
        response = Response(pipe, 200, mimetype="text/event-stream", headers={
            "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return outcomes.Outcome(outcomes.OK, False), response

    def _pipe_events(self, exchange, held: bytes, transform, attempt, request, deadline,
                     scrub) -> Iterator[bytes]:
        timeouts = self.timeouts

        def broken(message: str, code: str) -> bytes:
            # The strike is recorded before the event goes out: the caller may act on it at once.
            RELAY_BROKEN_STREAMS.labels(attempt.upstream.name).inc()
            if request.on_broken is not None:
                request.on_broken()
            if request.own_key is None:
                self.health.record(attempt.upstream.name, attempt.key.id,
                                   outcomes.Outcome(outcomes.SOFT, False, ApiError(message, code)))
            return events.error_event(message, code)

        seen_done = seen_finish = False
        ends_by = None  # once [DONE] has come: when the body must have ended
        tail = b""  # the end of what came, for markers cut between two reads
        settle = request.on_complete  # called once, when the answer is known to be complete
        recent: deque[bytes] = deque()  # the last reads, USAGE_TAIL_BYTES at least
        recent_size = 0
        try:
            data = held
            last_byte = time.monotonic()
            while True:
                if data:
                    # Per read, only what must be looked at: the changes (identity when none
                    # apply), whether [DONE] or a finish_reason has come, and the tail the
                    # usage is read from; the bytes go out in one write, as they came.
                    out = transform(data)
                    if not seen_done:
                        scan = tail + data
                        seen_done = events.DONE in scan
                        seen_finish = seen_finish or events.finishes(scan)
                        tail = scan[-40:]
                    if settle is not None:
                        recent.append(data)
                        recent_size += len(data)
                        while recent_size - len(recent[0]) >= USAGE_TAIL_BYTES:
                            recent_size -= len(recent.popleft())
                        if seen_done:  # settled before [DONE] goes out: the caller stops there
                            settle(events.usage_in(_tail_of(recent)))
                            settle = None
                    if out:
                        yield out
                now = time.monotonic()
                if data:
                    last_byte = now
                if seen_done:
                    if ends_by is None:
                        ends_by = now + END_OF_BODY_WAIT
                    elif now >= ends_by:  # complete, and the rest of the body is not needed
                        self._complete(attempt, request)
                        return
                if now >= deadline:
                    yield broken("the answer took longer than the relay allows",
                                 "upstream_timeout")
                    return
                if now - last_byte >= timeouts.idle:
                    yield broken("the upstream stopped sending the answer",
                                 "upstream_stream_stalled")
                    return
                wait = min(deadline - now, timeouts.idle - (now - last_byte))
                if ends_by is not None:
                    wait = min(wait, ends_by - now)
                if timeouts.ping > 0:
                    wait = min(wait, timeouts.ping)
                try:
                    data = exchange.read(max(0.0, wait))
                except TransportFailure:
                    yield broken("the upstream connection broke mid-answer",
                                 "upstream_stream_broken")
                    return
                if data is None:
                    if timeouts.ping > 0 and time.monotonic() - last_byte >= timeouts.ping:
                        yield events.PING
                    data = b""
                    continue
                if data == b"":
                    rest = transform.flush()
                    if rest:
                        yield rest
                    if not seen_done and not seen_finish:
                        yield broken("the upstream answer ended before it was complete",
                                     "upstream_stream_broken")
                        return
                    self._complete(attempt, request)
                    if settle is not None:
                        settle(events.usage_in(_tail_of(recent)))
                    if not seen_done:
                        yield events.DONE + b"\n\n"  # complete, but the upstream omitted it
                    return
        finally:
            exchange.close()

    def _complete(self, attempt, request) -> None:
        """The answer came whole: a server-held key's success is recorded (strikes forgotten)."""
        if request.own_key is None:
            self.health.record(attempt.upstream.name, attempt.key.id,
                               outcomes.Outcome(outcomes.OK, False), attempt.model, attempt.state)

    def _pipe_bytes(self, exchange, first: bytes, deadline, settle=None) -> Iterator[bytes]:
        try:
            if first:
                yield first
            while True:
                try:
                    data = exchange.read(max(0.0, min(self.timeouts.idle,
                                                      deadline - time.monotonic())))
                except TransportFailure:
                    return  # a binary body cannot carry an error: the short body tells
                if not data:
                    if data == b"" and settle is not None:  # the end, not a silence
                        settle(None)
                    return
                yield data
        finally:
            exchange.close()


class _Transform:
    """The stream changes for one answer; identity (bytes pass as they came) when none apply."""

    def __init__(self, request: RelayRequest, attempt: Attempt, injected: bool):
        self.strip_usage = injected
        self.rename = attempt.model != request.model
        self.names = (attempt.model.encode(), request.model.encode())
        self.identity = not (self.strip_usage or self.rename)
        self.splitter = events.EventSplitter()

    def __call__(self, data: bytes) -> bytes:
        if self.identity:
            return data
        if (not self.rename and not self.splitter.pending and data.endswith(b"\n\n")
                and not events.may_hold_usage_only(data)):
            # Whole events, none of them the usage chunk: one replace over the read removes the
            # `"usage":null` members exactly as event by event (no event is cut or dropped).
            return events.strip_injected_usage(data)
        out = []
        for event in self.splitter.feed(data):
            if self.strip_usage:
                event = events.strip_injected_usage(event)
                if event is None:
                    continue
            if self.rename:
                event = events.rename_model(event, *self.names)
            out.append(event)
        return b"".join(out)

    def flush(self) -> bytes:
        return b"" if self.identity else self.splitter.pending


def _tail_of(chunks: deque[bytes]) -> bytes:
    return b"".join(chunks)[-USAGE_TAIL_BYTES:]


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return True
