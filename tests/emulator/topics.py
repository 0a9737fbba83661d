"""The site's WebSocket for handed-off turns: `GET {api}/celsius/ws/user` and the WebSocket it
names (docs/protocol-requests.md, docs/protocol.md "Hand-off").

chatgpt.com serves it from another host (`wss://ws.chatgpt.com/...`); here it is another loopback
listener, `TopicServer` (the `websockets` library's threaded server), started by the first
`celsius/ws/user`, over TLS (wss://, its certificate) when the emulator is. The URL it hands out
carries a ticket naming the account, since a browser cannot send a bearer token on a WebSocket
(the real URL's credential is not documented: the ticket is the emulator's own); the handshake
must come with the site's `Origin`.

A client message is one command object or a JSON array of them:

* `connect` (`presence`): no answer.
* `subscribe` (`topic_id`, `offset`): a reply, sent in an array,
  `{"id": <command id>, "type": "reply",
    "reply": {"topic_id", "recovered", "catchups", "last_offset"}}`.
  For the turn topic of a handed-off turn (`conversation-turn-<turn_exchange_id>`) the first
  `switches.ws_catchups` items ride in `catchups`, and the others follow one `message` frame per
  WebSocket message: `{"type":"message","topic_id":…,"payload":{"type":
  "conversation-turn-stream","payload":{"type":"stream-item","conversation_id":…,"turn_id":…,
  "encoded_item":"<one SSE event>"}}}`,
  the events of the resumed turn (streams.resumed_leg, `data: [DONE]` included), then the same
  frame with `{"type":"done",…}` inside. A turn delivered to its `done` is forgotten: a resume
  after it is a duplicate (404).

Switches: `handoff` says which options the stream offers ("poll": the topic has no turn, and the
connection is closed after the reply); `ws_fault` "refuse" answers the handshake 403, "break"
cuts the TCP connection after `ws_break_after` pushed items, "silent" sends nothing after them;
`ws_catchups`; `chunk_delay` (seconds between two pushed items).
"""
from __future__ import annotations

import json
import secrets
import socket
import ssl
import threading
import time
from urllib.parse import parse_qs, urlsplit

from flask import Blueprint, current_app
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from . import bearer, images, streams, tokens
from .failures import json_response

blueprint = Blueprint("turn_topics", __name__)

TOPIC_PREFIX = "conversation-turn-"
# A connection that sends nothing for this long is closed; one may send this many messages.
IDLE_SECONDS = 60
MAX_CLIENT_MESSAGES = 100
MAX_TICKETS = 10_000


@blueprint.get("/celsius/ws/user")
def websocket_user():
    owner = bearer.account()
    emulator = current_app.extensions["emulator"]
    return json_response(200, {"websocket_url": emulator.topics.url_for(owner)})


def exchange_id(turn: streams.Turn) -> str:
    """The turn's `turn_exchange_id` (its topic is `conversation-turn-<it>`)."""
    return streams.turn_exchange_id(turn)


def message_frame(topic: str, turn: streams.Turn, inner: dict) -> dict:
    return {"type": "message", "topic_id": topic,
            "payload": {"type": "conversation-turn-stream",
                        "payload": {**inner, "conversation_id": turn.conversation_id,
                                    "turn_id": exchange_id(turn)}}}


def stream_item(topic: str, turn: streams.Turn, event: bytes) -> dict:
    return message_frame(topic, turn, {"type": "stream-item", "encoded_item": event.decode()})


def done_frame(topic: str, turn: streams.Turn) -> dict:
    return message_frame(topic, turn, {"type": "done"})


def commands_of(message: str | bytes) -> list[dict]:
    """The commands of one client message (an object or an array of them); others skipped."""
    try:
        parsed = json.loads(message)
    except ValueError:
        return []
    listed = parsed if isinstance(parsed, list) else [parsed]
    return [command for command in listed
            if isinstance(command, dict) and isinstance(command.get("command"), dict)]


class TopicServer:
    """The WebSocket listener of one Emulator (see the module docstring)."""

    def __init__(self, emulator):
        self.emulator = emulator
        self._server = None
        self._lock = threading.Lock()
        self._tickets: dict[str, str] = {}
        # (account, topic) of every subscribe, and the items sent (catch-ups and pushed), for
        # tests.
        self.subscriptions: list[tuple[str, str]] = []
        self.sent: list[bytes] = []

    def url_for(self, owner: str) -> str:
        """A WebSocket URL for `owner`, starting the listener on first use."""
        ticket = secrets.token_urlsafe(24)
        with self._lock:
            if self._server is None:
                self._server = serve(self._serve, "127.0.0.1", 0, process_request=self._check,
                                     compression=None, max_size=1 << 20, ssl=self._tls())
                threading.Thread(target=self._server.serve_forever, name="emulator-topics",
                                 daemon=True).start()
            self._tickets[ticket] = owner
            while len(self._tickets) > MAX_TICKETS:
                del self._tickets[next(iter(self._tickets))]
            port = self._server.socket.getsockname()[1]
        scheme = "wss" if self.emulator.cert_file else "ws"
        return f"{scheme}://127.0.0.1:{port}/ws/user?verify={ticket}"

    def _tls(self) -> ssl.SSLContext | None:
        """Over TLS when the emulator is (its certificate, as the site's wss://)."""
        if not self.emulator.cert_file:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.emulator.cert_file)
        return context

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    def reset(self) -> None:
        with self._lock:
            self._tickets.clear()
            self.subscriptions.clear()
            self.sent.clear()

    def _owner(self, path: str) -> str | None:
        ticket = parse_qs(urlsplit(path).query).get("verify", [""])[0]
        with self._lock:
            return self._tickets.get(ticket)

    def _check(self, connection: ServerConnection, request):
        """The handshake: a known ticket (401), the site's Origin (403), the `refuse` fault."""
        emulator = self.emulator
        emulator.record(method="GET", path=urlsplit(request.path).path,
                        headers={name.lower(): value
                                 for name, value in request.headers.raw_items()},
                        json=None, form={}, args={}, body=b"", time=time.time(),
                        client_port=None)
        if self._owner(request.path) is None:
            return connection.respond(401, "Unauthorized\n")
        if request.headers.get("Origin") != emulator.url or \
                emulator.switches.ws_fault == "refuse":
            return connection.respond(403, "Forbidden\n")
        return None

    def _serve(self, connection: ServerConnection) -> None:
        owner = self._owner(connection.request.path)
        for _ in range(MAX_CLIENT_MESSAGES):
            try:
                message = connection.recv(timeout=IDLE_SECONDS)
            except (TimeoutError, ConnectionClosed):
                return
            replies, turns = [], []
            for command in commands_of(message):
                body = command["command"]
                if body.get("type") != "subscribe" or not isinstance(body.get("topic_id"), str):
                    continue
                topic = body["topic_id"]
                with self._lock:
                    self.subscriptions.append((owner, topic))
                turn = self._turn_on(topic, owner)
                items = self._items(turn) if turn is not None else []
                caught_up = items[:self.emulator.switches.ws_catchups]
                self.sent += caught_up
                replies.append({"id": command.get("id"), "type": "reply", "reply": {
                    "topic_id": topic, "recovered": bool(caught_up),
                    "catchups": [stream_item(topic, turn, item) for item in caught_up],
                    "last_offset": str(len(caught_up))}})
                if turn is not None:
                    turns.append((topic, turn, items[len(caught_up):]))
                elif topic.startswith(TOPIC_PREFIX):
                    turns.append((topic, None, []))
            try:
                if replies:
                    connection.send(json.dumps(replies))
                for topic, turn, rest in turns:
                    if turn is None:
                        connection.close(1011, "no such turn")
                        return
                    if not self._push(connection, topic, turn, rest):
                        return  # the `break` fault cut it
            except ConnectionClosed:
                return

    def _turn_on(self, topic: str, owner: str | None) -> streams.Turn | None:
        """The handed-off turn of `owner` whose topic is `topic`, if it is still on it."""
        emulator = self.emulator
        if not topic.startswith(TOPIC_PREFIX) or emulator.switches.handoff == "poll":
            return None
        for turn in list(emulator.handoffs.values()):
            if TOPIC_PREFIX + exchange_id(turn) == topic and \
                    emulator.conversations.get(turn.conversation_id, owner) is not None:
                return turn
        return None

    def _items(self, turn: streams.Turn) -> list[bytes]:
        """The SSE events of the turn's resumed leg, one per item."""
        emulator = self.emulator
        switches = emulator.switches
        resume_token = tokens.mint_resume_token(emulator.secret, turn.conversation_id)
        if images.is_image(turn):
            return list(images.resumed_leg(emulator.images, turn, resume_token))
        return list(streams.resumed_leg(turn, resume_token, 0, switches.words_per_delta,
                                        switches.stream_error))

    def _push(self, connection: ServerConnection, topic: str, turn: streams.Turn,
              items: list[bytes]) -> bool:
        """Send the items, then `done`; False if the `break` fault cut the connection first."""
        switches = self.emulator.switches
        for index, item in enumerate(items):
            if switches.ws_fault == "break" and index == switches.ws_break_after:
                _cut(connection)
                return False
            if switches.ws_fault == "silent" and index == switches.ws_break_after:
                return True  # nothing more: the client's next message, or its leaving, ends it
            if index and switches.chunk_delay:
                time.sleep(switches.chunk_delay)
            connection.send(json.dumps(stream_item(topic, turn, item)))
            self.sent.append(item)
        connection.send(json.dumps(done_frame(topic, turn)))
        self.emulator.handoffs.pop(turn.conversation_id, None)
        return True


def _cut(connection: ServerConnection) -> None:
    """Shut the TCP connection without a close frame, as a network failure would."""
    try:
        connection.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
