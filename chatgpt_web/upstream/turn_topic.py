"""A handed-off answer read from its turn topic on the site's WebSocket (docs/protocol-requests.md).

When a stream hands the answer off with the `subscribe_ws_topic` option, the browser reads the
rest from topic `conversation-turn-<turn_exchange_id>`:

1. `GET {api}/celsius/ws/user` (the conversation headers) answers `{"websocket_url": "wss://..."}`;
2. the WebSocket is dialled (ws_client.py) with the page's `Origin`, and one text message sent:
   `[{"id":1,"command":{"type":"connect","presence":{...}}},
     {"id":2,"command":{"type":"subscribe","topic_id":"conversation-turn-<tx>","offset":"0"}}]`;
3. the server replies `{"type":"reply","reply":{"topic_id","recovered","catchups":[...],
   "last_offset"}}`, the catch-ups being the topic's earlier messages, then pushes messages
   `{"type":"message","topic_id":...,"payload":{"type":"conversation-turn-stream","payload":
   {"type":"stream-item","conversation_id":...,"turn_id":"<tx>","encoded_item":"event: delta\\n
   data: {...}\\n\\n"}}}` and finally one whose inner payload is `{"type":"done",...}`.

A WebSocket message holds one such frame or a JSON array of them. `TopicReader` is the pure part:
messages in, the turn's SSE text out (each `encoded_item`, catch-ups first), in the grammar of the
inline stream, so the same parser and reducer read it (stream.relay).
"""
from __future__ import annotations

import json
from collections.abc import Iterator

from .. import json_codec
from ..errors import UpstreamError, seconds_left
from ..transport import upstream_errors
from ..ws_client import Dialer
from .endpoints import Upstream
from .errors import from_upstream
from .headers import target_headers, without_write_tokens
from .stream import Handoff, StreamReducer, TextDelta, relay

WEBSOCKET_URL_PATH = "/celsius/ws/user"
SUBSCRIBE_ID = 2
# Messages one answer may take (empty or foreign ones count too): with MAX_UPSTREAM_ANSWER_BYTES,
# what bounds a server that sends endless small messages.
MAX_MESSAGES = 200_000
_MAX_URL_ANSWER = 64 * 1024


def topic_of(handoff: Handoff | None) -> str | None:
    """The WebSocket topic a hand-off offers (`subscribe_ws_topic`), else None."""
    if handoff is None:
        return None
    for option in handoff.options:
        if option.type == "subscribe_ws_topic":
            if option.topic_id:
                return option.topic_id
            if handoff.turn_exchange_id:
                return f"conversation-turn-{handoff.turn_exchange_id}"
    return None


def subscribe_message(topic_id: str) -> str:
    """What the browser sends first: connect (presence) and the subscription, in one array."""
    return json.dumps([
        {"id": 1, "command": {"type": "connect",
                              "presence": {"type": "presence", "state": "foreground"}}},
        {"id": SUBSCRIBE_ID, "command": {"type": "subscribe", "topic_id": topic_id,
                                         "offset": "0"}},
    ], separators=(",", ":"))


class TopicReader:
    """WebSocket messages of one turn topic -> the SSE text of the turn.

    `feed(message)` returns the `encoded_item`s the message carried for this topic (UTF-8, each
    ending in a blank line), catch-ups of our subscription's reply first; `done` is True once the
    topic said the turn is over. Frames of other topics, unknown frames and messages that are not
    JSON are skipped: the connection carries the account's other topics too.

    :raise UpstreamError: the server refused the subscription (upstream_stream_broken).
    """

    def __init__(self, topic_id: str):
        self.topic_id = topic_id
        self.done = False
        self.subscribed = False

    def feed(self, message: bytes | str) -> list[bytes]:
        try:
            parsed = json_codec.loads(message)
        except ValueError:
            return []
        frames = parsed if isinstance(parsed, list) else [parsed]
        items: list[bytes] = []
        for frame in frames:
            if isinstance(frame, dict) and not self.done:
                self._frame(frame, items)
        return items

    def _frame(self, frame: dict, items: list[bytes]) -> None:
        kind = frame.get("type")
        if kind == "reply":
            reply = frame.get("reply")
            ours = (isinstance(reply, dict) and reply.get("topic_id") == self.topic_id) \
                or frame.get("id") == SUBSCRIBE_ID
            if not ours:
                return
            if not isinstance(reply, dict) or reply.get("error") or frame.get("error"):
                raise UpstreamError("the upstream refused the conversation's WebSocket topic",
                                    "upstream_stream_broken")
            self.subscribed = True
            for catchup in reply.get("catchups") or []:
                if isinstance(catchup, dict) and not self.done:
                    self._message(catchup, items)
        elif kind == "message":
            self._message(frame, items)

    def _message(self, frame: dict, items: list[bytes]) -> None:
        if frame.get("topic_id") not in (self.topic_id, None):
            return
        payload = frame.get("payload")
        if not isinstance(payload, dict) or payload.get("type") != "conversation-turn-stream":
            return
        inner = payload.get("payload")
        if not isinstance(inner, dict):
            return
        if inner.get("type") == "done":
            self.done = True
        elif inner.get("type") == "stream-item":
            encoded = inner.get("encoded_item")
            if isinstance(encoded, str) and encoded:
                items.append(_ended(encoded).encode())


def _ended(encoded: str) -> str:
    """An item's SSE text ending in a blank line, so that it never runs into the next one."""
    if encoded.endswith(("\n\n", "\r\n\r\n")):
        return encoded
    return encoded + ("\n" if encoded.endswith("\n") else "\n\n")


def websocket_url(session, upstream: Upstream, headers: dict, deadline: float) -> str:
    """The account's WebSocket URL (`GET {api}/celsius/ws/user`): a credential, never logged.

    :raise ApiError: the site's refusal (from_upstream), or an answer without a ws(s) URL.
    """
    path = WEBSOCKET_URL_PATH
    read_headers = without_write_tokens(headers)
    read_headers.update({"Accept": "*/*", **target_headers(path)})
    with upstream_errors("conversation websocket"):
        response = session.get(upstream.url(path), headers=read_headers,
                               timeout=seconds_left(deadline))
    content = response.content[:_MAX_URL_ANSWER]
    if response.status_code != 200:
        raise from_upstream(response.status_code, content, response.headers)
    try:
        url = json_codec.loads(content).get("websocket_url")
    except (ValueError, AttributeError):
        url = None
    if not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
        raise UpstreamError("the upstream named no WebSocket for the conversation",
                            "upstream_stream_broken")
    return url


def follow(session, upstream: Upstream, headers: dict, dialer: Dialer, topic_id: str,
           reducer: StreamReducer, deadline: float, *, answer_bytes: int,
           event_bytes: int) -> Iterator[TextDelta]:
    """The text the turn topic adds to the answer `reducer` holds, as it arrives.

    :raise UpstreamError: refused, broken, or closed before the turn ended
        (upstream_stream_broken; the caller tries another transport), or over the limits:
        a message over `event_bytes`, all of them over `answer_bytes` (upstream_bad_answer).
    """
    url = websocket_url(session, upstream, headers, deadline)
    with dialer.open(url, origin=upstream.origin, cookies=session.cookies,
                     resolve=upstream.resolve, timeout=min(seconds_left(deadline), 15.0),
                     max_message_bytes=event_bytes) as connection:
        connection.send_text(subscribe_message(topic_id))
        reader = TopicReader(topic_id)
        chunks = _turn_text(connection.messages(deadline), reader, answer_bytes)
        yield from relay(chunks, reducer, event_bytes)
        if not (reader.done or reducer.done):
            raise UpstreamError("the conversation's WebSocket topic ended before the answer "
                                "did", "upstream_stream_broken")


def _turn_text(messages: Iterator[bytes], reader: TopicReader,
               answer_bytes: int) -> Iterator[bytes]:
    received = 0
    for count, message in enumerate(messages, 1):
        received += len(message)
        if received > answer_bytes or count > MAX_MESSAGES:
            raise UpstreamError(f"the upstream answer is longer than {answer_bytes} bytes"
                                if received > answer_bytes else
                                f"the upstream sent more than {MAX_MESSAGES} WebSocket messages",
                                "upstream_bad_answer")
        yield from reader.feed(message)
        if reader.done:
            return
