"""The outbound WebSocket (chatgpt_web/ws_client.py) against small loopback servers: whole
messages out of frames, a message over the limit, a connection that goes dead, a refused or
missing server, each as one of the service's errors."""
from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

import pytest

from chatgpt_web import ws_client
from chatgpt_web.errors import UpstreamError
from chatgpt_web.ws_client import Dialer

TIMEOUT = 30  # seconds: bounds, not expectations
ORIGIN = "https://chatgpt.example"
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes, *, opcode: int = 0x1, final: bool = True) -> bytes:
    """A server frame (unmasked)."""
    head = bytes([(0x80 if final else 0) | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    if len(payload) < 1 << 16:
        return head + bytes([126]) + len(payload).to_bytes(2, "big") + payload
    return head + bytes([127]) + len(payload).to_bytes(8, "big") + payload


class RawServer:
    """Accepts one connection, completes the WebSocket handshake (or answers `status`), writes
    `frames`, then holds the connection without reading or answering anything."""

    def __init__(self, frames: list[bytes] = (), status: int = 101):
        self.frames, self.status = list(frames), status
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/ws"
        self.request = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.settimeout(TIMEOUT)
            while b"\r\n\r\n" not in self.request:
                self.request += connection.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in self.request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            if self.status != 101:
                connection.sendall(b"HTTP/1.1 %d No\r\nContent-Length: 0\r\n\r\n" % self.status)
            else:
                accept = base64.b64encode(hashlib.sha1(key + _GUID.encode()).digest())
                connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                   b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                                   + b"\r\n\r\n" + b"".join(self.frames))
            self.done.wait(TIMEOUT)

    def close(self) -> None:
        self.done.set()
        self.thread.join(TIMEOUT)
        self.listener.close()


@pytest.fixture
def dialer() -> Dialer:
    return Dialer("chrome")


def open_to(dialer: Dialer, server: RawServer, limit: int = 1 << 20):
    return dialer.open(server.url, origin=ORIGIN, timeout=TIMEOUT, max_message_bytes=limit)


def test_fragments_are_joined_into_whole_messages_and_close_ends_them(dialer):
    server = RawServer([frame(b'{"a":', final=False), frame(b"1}", opcode=0x0),
                        frame(b"second"), frame(b"\x03\xe8", opcode=0x8)])
    try:
        with open_to(dialer, server) as connection:
            messages = list(connection.messages(time.monotonic() + TIMEOUT))
    finally:
        server.close()
    assert messages == [b'{"a":1}', b"second"]
    request = server.request.decode().lower()
    assert f"origin: {ORIGIN}" in request and "sec-fetch-mode: websocket" in request
    assert "authorization" not in request and "upgrade-insecure-requests" not in request


def test_a_message_over_the_limit_is_refused_before_it_is_whole(dialer):
    server = RawServer([frame(b"x" * 5000, final=False), frame(b"y" * 5000, opcode=0x0)])
    try:
        with open_to(dialer, server, limit=8192) as connection, \
                pytest.raises(UpstreamError) as raised:
            list(connection.messages(time.monotonic() + TIMEOUT))
    finally:
        server.close()
    assert raised.value.code == "upstream_bad_answer"


def test_a_connection_that_answers_nothing_not_even_pings_is_given_up(dialer, monkeypatch):
    monkeypatch.setattr(ws_client, "PING_SECONDS", 0.05)
    monkeypatch.setattr(ws_client, "IDLE_SECONDS", 0.5)
    server = RawServer([frame(b"hello")])
    try:
        with open_to(dialer, server) as connection, pytest.raises(UpstreamError) as raised:
            for message in connection.messages(time.monotonic() + TIMEOUT):
                assert message == b"hello"
    finally:
        server.close()
    assert raised.value.code == "upstream_stream_broken"
    assert "sent nothing" in raised.value.message


def test_a_refused_handshake_and_no_server_are_upstream_errors(dialer):
    server = RawServer(status=403)
    try:
        with pytest.raises(UpstreamError) as refused:
            open_to(dialer, server)
    finally:
        server.close()
    assert refused.value.code == "upstream_unreachable" and "refused" in refused.value.message
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    with pytest.raises(UpstreamError) as unreachable:
        dialer.open(f"ws://127.0.0.1:{port}/ws", origin=ORIGIN, timeout=TIMEOUT,
                    max_message_bytes=1024)
    assert unreachable.value.code == "upstream_unreachable"
