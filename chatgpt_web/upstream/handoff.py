"""When the site hands the rest of an answer to another transport (docs/protocol-requests.md).

A 2026 stream may carry a `stream_handoff` event (`conversation_id`, `turn_exchange_id`, the
transports on offer) and then end without the answer; the StreamReducer notes it
(`handoff_pending`). `follow()` continues it, trying in turn:

1. the WebSocket, when `subscribe_ws_topic` is offered (turn_topic.py: the turn topic's
   `encoded_item`s), unless HANDOFF_WEBSOCKET=false or the upstream is a caller's `reverse_proxy`
   (the WebSocket's host is named by the upstream's answer, which the SSRF guard never saw);
2. `POST {api}/f/conversation/resume {conversation_id, offset: 0}`, when `resume_sse_endpoint`
   is offered or the WebSocket was not tried: an event stream that repeats the hand-off preamble
   and then streams the answer;
3. `GET {api}/conversation/{id}` every `poll_interval` seconds until the assistant message is
   finished.

Each leg is fed to the same reducer, which knows the messages of the legs before it (by id), so
text already relayed is never relayed twice: a WebSocket that broke mid-answer is taken up by the
next transport, and the caller sees one uninterrupted answer. A transport that is refused,
unreachable, broken or ends early gives way to the next; the deadline, a moderation block and the
size limits (MAX_UPSTREAM_EVENT_BYTES, MAX_UPSTREAM_ANSWER_BYTES: 502 upstream_bad_answer) end
the answer, since the next transport would carry the same answer.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

from .. import stream_pump
from ..errors import ApiError, ContentBlocked, UpstreamError, UpstreamTimeout, seconds_left
from ..metrics import timed_upstream
from ..transport import stream_post, upstream_errors
from ..ws_client import Dialer
from . import turn_topic
from .endpoints import Upstream
from .errors import from_upstream
from .headers import target_headers, without_write_tokens
from .stream import (
    Completion,
    Handoff,
    StreamReducer,
    TextDelta,
    bounded_chunks,
    image_pointers,
    relay,
)

MAX_CONVERSATION_BYTES = 8 * 1024 * 1024
MAX_POLL_FAILURES = 3
_FINISHED = ("finished_successfully", "finished_partial_completion")


@dataclass(frozen=True)
class Limits:
    """How much of the upstream a hand-off may read (MAX_UPSTREAM_ANSWER_BYTES, ..._EVENT_BYTES)."""

    answer_bytes: int = 64 * 1024 * 1024
    event_bytes: int = 4 * 1024 * 1024


def follow(session, upstream: Upstream, headers: dict, reducer: StreamReducer, *,
           prefix: str, relayed: str, deadline: float, poll_interval: float,
           limits: Limits = Limits(), websocket: Dialer | None = None) -> Iterator[TextDelta]:
    """Relay the rest of the answer `reducer` saw handed off; return (as the generator's value)
    its Completion.

    `prefix` is the text of the answer before this turn (a continuation), `relayed` what this
    turn's first leg already relayed. `websocket` dials the site's WebSocket (None: not used).
    """
    handoff = reducer.handoff
    conversation_id = (handoff.conversation_id if handoff else None) or reducer.conversation_id
    if not conversation_id:
        raise UpstreamError("the upstream handed the answer off without a conversation id",
                            "upstream_bad_stream")
    sent = prefix + relayed
    for leg in _transports(session, upstream, headers, reducer, handoff, conversation_id,
                           deadline, limits, websocket):
        try:
            reducer.resume_leg()
            for delta in leg():
                sent += delta.text
                yield delta
            return reducer.result()
        except (UpstreamTimeout, ContentBlocked):
            raise
        except ApiError as error:
            if error.code == "upstream_bad_answer":
                raise  # over the size limits: the next transport carries the same answer
            # refused, broken or ended early: the next transport takes the answer up
    completion = yield from _poll(session, upstream, headers, conversation_id, sent, deadline,
                                  poll_interval)
    return completion


def _transports(session, upstream: Upstream, headers: dict, reducer: StreamReducer,
                handoff: Handoff | None, conversation_id: str, deadline: float,
                limits: Limits, websocket: Dialer | None) -> Iterator:
    """The legs to try before polling, in order (see the module docstring)."""
    topic = turn_topic.topic_of(handoff)
    # Only the operator's CHATGPT_BASE_URL has a home page (endpoints.from_base_url).
    use_websocket = websocket is not None and topic is not None and upstream.has_home_page
    if use_websocket:
        yield lambda: turn_topic.follow(session, upstream, headers, websocket, topic, reducer,
                                        deadline, answer_bytes=limits.answer_bytes,
                                        event_bytes=limits.event_bytes)
    if not use_websocket or handoff.offers("resume_sse_endpoint"):
        yield lambda: _resume(session, upstream, headers, conversation_id, reducer, deadline,
                              limits)


def _resume(session, upstream: Upstream, headers: dict, conversation_id: str,
            reducer: StreamReducer, deadline: float, limits: Limits) -> Iterator[TextDelta]:
    path = "/f/conversation/resume"
    resume_headers = {**headers, "Accept": "text/event-stream", **target_headers(path)}
    with upstream_errors("conversation resume"):
        with timed_upstream("conversation"):
            response = stream_post(session, upstream.url(path),
                                   json={"conversation_id": conversation_id, "offset": 0},
                                   headers=resume_headers, timeout=seconds_left(deadline))
        with response:
            if response.status_code != 200 or "text/event-stream" not in response.headers.get(
                    "Content-Type", ""):
                raise UpstreamError(f"resume answered HTTP {response.status_code}",
                                    "upstream_stream_broken")
            chunks = bounded_chunks(response.iter_content(), deadline, limits.answer_bytes)
            yield from relay(chunks, reducer, limits.event_bytes)


def _poll(session, upstream: Upstream, headers: dict, conversation_id: str, sent: str,
          deadline: float, poll_interval: float) -> Iterator[TextDelta]:
    failures = 0
    read_headers = without_write_tokens(headers)
    read_headers["Accept"] = "*/*"
    while True:
        with upstream_errors("conversation poll"):
            response = session.get(upstream.url(f"/conversation/{conversation_id}"),
                                   headers=read_headers, timeout=seconds_left(deadline))
        if response.status_code != 200:
            failures += 1
            if failures >= MAX_POLL_FAILURES:
                raise from_upstream(response.status_code, response.content[:65536],
                                    response.headers)
        else:
            failures = 0
            finished = _finished_answer(response.content)
            if finished is not None:
                text, message, images = finished
                if text.startswith(sent) and len(text) > len(sent):
                    yield TextDelta(text[len(sent):])
                metadata = message.get("metadata") or {}
                finish = metadata.get("finish_details") or {}
                return Completion(text=text if text.startswith(sent) else sent,
                                  conversation_id=conversation_id, message_id=message.get("id"),
                                  finish_type=finish.get("type") if isinstance(finish, dict)
                                  else None, model_slug=metadata.get("model_slug"),
                                  message_model_slug=metadata.get("model_slug"),
                                  images=images)
        wait = min(poll_interval, max(0.0, deadline - time.monotonic()))
        stream_pump.sleep(wait)  # in the pump, the other streams run meanwhile
        seconds_left(deadline)


def _finished_answer(content: bytes) -> tuple[str, dict, tuple[str, ...]] | None:
    """(text, message, image pointers) of the conversation's current answer once it is
    finished: an assistant message, or the image tool's message when the turn only drew."""
    if len(content) > MAX_CONVERSATION_BYTES:
        raise UpstreamError("the conversation is too large to read", "upstream_bad_answer")
    try:
        conversation = json.loads(content)
        mapping = conversation["mapping"]
        message = mapping[conversation["current_node"]]["message"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(message, dict) or message.get("status") not in _FINISHED:
        return None
    images = _turn_images(mapping, conversation["current_node"])
    role = (message.get("author") or {}).get("role")
    if role != "assistant" and not (role == "tool" and image_pointers(message)):
        return None
    parts = (message.get("content") or {}).get("parts") or []
    return "".join(p for p in parts if isinstance(p, str)), message, images


def _turn_images(mapping: dict, node_id: str) -> tuple[str, ...]:
    """The images drawn in the turn that ends at `node_id`: its messages back to the user's."""
    found: list[str] = []
    for _ in range(len(mapping)):  # bounded: a cycle in a hostile tree ends here
        node = mapping.get(node_id) if isinstance(node_id, str) else None
        message = node.get("message") if isinstance(node, dict) else None
        if not isinstance(message, dict) or (message.get("author") or {}).get("role") == "user":
            break
        found[:0] = image_pointers(message)
        node_id = node.get("parent")
    return tuple(dict.fromkeys(found))
