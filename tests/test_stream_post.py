"""http.stream_post: the conversation POST read in the calling thread by a curl multi handle.

A tiny raw-socket server stands in for the upstream (or for an HTTP proxy), so each test controls
exactly when bytes are sent and can see when our side closes its connection.
"""
from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time

import pytest
from curl_cffi.requests import exceptions as curl_errors

from chatgpt_web import curl_transfer, errors, transport
from chatgpt_web.config import Config
from chatgpt_web.transport import new_session, stream_post, upstream_errors
from chatgpt_web.upstream import conversation
from tests.servers import LoopbackSocketServer, read_http_request

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawServer(LoopbackSocketServer):
    """Accepts connections on 127.0.0.1; `answer(conn, request)` writes the reply for each one.

    Records every request's head (bytes up to the blank line) and sets `closed` when a handler
    that waits for the peer sees our side close the connection.
    """

    def __init__(self, answer):
        self.answer = answer
        self.requests: list[bytes] = []
        self.closed = threading.Event()
        self.release = threading.Event()  # ends handlers that stall, at teardown
        super().__init__()

    def handle(self, conn, client_port):
        with conn:
            request = read_http_request(conn)
            if request is None:
                return
            head, _, _ = request
            self.requests.append(head)
            self.answer(self, conn)

    def wait_for_close(self, conn):
        """Block until the client closes the connection (recv gives EOF) or teardown."""
        conn.settimeout(0.2)
        while not self.release.is_set():
            try:
                if conn.recv(65536) == b"":
                    self.closed.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                self.closed.set()
                return

    def stop(self):
        self.release.set()
        super().stop()


@pytest.fixture(autouse=True, params=["multi-handle", "public-fallback"])
def reader(request, monkeypatch):
    """Every test here runs over both readers: the multi handle, and the public fallback used
    when a curl_cffi lacks what the multi handle needs (transport.probe_multi_handle_reader)."""
    chosen = {"multi-handle": transport.StreamedResponse,
              "public-fallback": transport.PublicStreamReader}[request.param]
    monkeypatch.setattr(transport, "READER", chosen)
    return request.param


@pytest.fixture
def raw_server():
    servers = []

    def start(answer):
        server = RawServer(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def sse_then_wait(server, conn):
    conn.sendall(SSE_HEAD + chunk(b"data: one\n\n"))
    server.wait_for_close(conn)


def sse_complete(server, conn):
    conn.sendall(SSE_HEAD + chunk(b"data: one\n\n") + chunk(b"data: two\n\n") + b"0\r\n\r\n")


def never_answer(server, conn):
    server.wait_for_close(conn)


def config(**env):
    return Config.from_env(env)


def post(session, url, timeout=30):
    return stream_post(session, url, json={"a": 1}, headers={"Accept": "text/event-stream"},
                       timeout=timeout)


def test_body_is_read_in_the_calling_thread(raw_server):
    server = raw_server(sse_complete)
    with new_session(config()) as session, post(session, server.url + "/c") as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert b"".join(response.iter_content()) == b"data: one\n\ndata: two\n\n"


def test_same_request_bytes_and_cookies_as_session_post(raw_server):
    def answer(server, conn):
        if len(server.requests) == 1:
            conn.sendall(b"HTTP/1.1 200 OK\r\nSet-Cookie: __cf_bm=abc; Path=/\r\n"
                         b"Content-Length: 0\r\n\r\n")
        else:
            sse_complete(server, conn)

    server = raw_server(answer)
    headers = {"Accept": "text/event-stream", "Authorization": "Bearer x", "Oai-Language": "en-US"}
    with new_session(config()) as session:
        session.get(server.url + "/")  # sets a cookie, as the home page / sentinel calls may
        session.post(server.url + "/c", json={"a": 1}, headers=headers, timeout=30).close()
        with stream_post(session, server.url + "/c", json={"a": 1}, headers=headers,
                         timeout=30) as response:
            b"".join(response.iter_content())
    via_session, via_stream_post = server.requests[1], server.requests[2]
    assert b"Cookie: __cf_bm=abc" in via_stream_post
    assert b"user-agent: mozilla/5.0" in via_stream_post.lower()
    assert b"sec-ch-ua:" in via_stream_post
    assert via_stream_post == via_session


def test_cookies_set_by_the_stream_reach_the_session(raw_server):
    def answer(server, conn):
        conn.sendall(SSE_HEAD.replace(b"\r\n\r\n", b"\r\nSet-Cookie: oai-sc=x1; Path=/\r\n\r\n")
                     + b"0\r\n\r\n")

    server = raw_server(answer)
    with new_session(config()) as session:
        with post(session, server.url + "/c") as response:
            b"".join(response.iter_content())
        assert session.cookies.get("oai-sc") == "x1"


def sse_heartbeats_until_closed(server, conn):
    """An answer that keeps coming (ChatGPT sends events every few hundred ms while it works)."""
    conn.sendall(SSE_HEAD + chunk(b"data: one\n\n"))
    conn.settimeout(0.2)
    while not server.release.is_set():
        try:
            conn.sendall(chunk(b": ping\n\n"))
            if conn.recv(65536) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    server.closed.set()


def test_closing_early_closes_the_connection(raw_server):
    # The public reader's transfer ends at the upstream's next chunk (curl_cffi stops a stream
    # from its write callback), so the upstream here keeps sending, as a real one does.
    server = raw_server(sse_heartbeats_until_closed)
    with new_session(config()) as session:
        response = post(session, server.url + "/c")
        # (with the pings that came with it: what one read brings is one piece)
        assert next(response.iter_content()).startswith(b"data: one\n\n")
        started = time.monotonic()
        response.close()
        assert time.monotonic() - started < 1, "closing waited for the transfer"
        assert server.closed.wait(10), "the upstream connection stayed open"
        response.close()  # idempotent


def test_abandoned_answer_generator_closes_the_transfer(raw_server, monkeypatch, emulator):
    """The client went away: closing ConversationClient.stream's generator ends the transfer."""
    from chatgpt_web.upstream.endpoints import from_base_url
    from chatgpt_web.upstream.pow import ProofOfWorkSolver

    opened = []
    real = conversation.stream_post

    def recording(*args, **kwargs):
        opened.append(real(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(conversation, "stream_post", recording)
    emulator.switches.pow_required = False
    emulator.switches.chunk_delay = 0.05  # the answer is still streaming when we leave
    client = conversation.ConversationClient(config(), ProofOfWorkSolver())
    request = conversation.ConversationRequest(
        (conversation.ChatMessage("user", "a b c d e f"),), "auto")
    answer = client.stream(emulator.mint_access_token(), request, from_base_url(emulator.url))
    next(answer)
    answer.close()
    assert len(opened) == 1 and opened[0].closed


def test_deadline_mid_stream_is_504(raw_server):
    server = raw_server(sse_then_wait)
    with new_session(config()) as session:
        with pytest.raises(errors.UpstreamTimeout) as caught:
            with upstream_errors("conversation"), post(session, server.url + "/c",
                                                       timeout=1) as response:
                for _ in response.iter_content():
                    pass
    assert caught.value.status == 504


def test_deadline_before_headers_is_504(raw_server):
    server = raw_server(never_answer)
    with new_session(config()) as session:
        with pytest.raises(errors.UpstreamTimeout):
            with upstream_errors("conversation"):
                post(session, server.url + "/c", timeout=1)


def test_connection_refused_is_unreachable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with new_session(config()) as session:
        with pytest.raises(errors.UpstreamError) as caught:
            with upstream_errors("conversation"):
                post(session, f"http://127.0.0.1:{port}/c")
    assert caught.value.code == "upstream_unreachable"


def test_broken_body_raises_after_the_chunks_before_it(raw_server):
    def answer(server, conn):
        conn.sendall(SSE_HEAD + chunk(b"data: one\n\n"))
        conn.shutdown(socket.SHUT_RDWR)

    server = raw_server(answer)
    seen = []
    with new_session(config()) as session, post(session, server.url + "/c") as response:
        with pytest.raises(curl_errors.RequestException):
            for piece in response.iter_content():
                seen.append(piece)
    assert seen == [b"data: one\n\n"]


def test_non_2xx_status_headers_and_body_map_through_from_upstream(raw_server):
    body = json.dumps({"detail": "Too many requests in 1 hour. Try again later."}).encode()

    def answer(server, conn):
        conn.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
                     b"Retry-After: 42\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = raw_server(answer)
    with new_session(config()) as session, post(session, server.url + "/c") as response:
        assert response.status_code == 429
        with pytest.raises(errors.RateLimited) as caught:
            conversation._check_stream_response(response)
    assert caught.value.retry_after == 42


def test_cloudflare_page_is_detected(raw_server):
    page = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>" \
           b"<body>cf-browser-verification challenge-platform</body></html>"

    def answer(server, conn):
        conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html\r\nServer: cloudflare\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(page), page))

    server = raw_server(answer)
    with new_session(config()) as session, post(session, server.url + "/c") as response:
        with pytest.raises(errors.ApiError) as caught:
            conversation._check_stream_response(response)
    assert caught.value.code == "cloudflare_challenge"


def test_outbound_proxy_is_used(raw_server):
    proxy = raw_server(sse_complete)  # a plain-http target goes to the proxy as an absolute URI
    with new_session(config(CHATGPT_PROXY=proxy.url)) as session:
        with post(session, "http://upstream.invalid/backend-api/conversation") as response:
            assert b"".join(response.iter_content()) == b"data: one\n\ndata: two\n\n"
    assert proxy.requests[0].startswith(
        b"POST http://upstream.invalid/backend-api/conversation HTTP/1.1\r\n")


def test_unreachable_proxy_is_a_proxy_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with new_session(config(CHATGPT_PROXY=f"http://127.0.0.1:{port}")) as session:
        with pytest.raises(errors.UpstreamError) as caught:
            with upstream_errors("conversation"):
                post(session, "http://upstream.invalid/c")
    assert caught.value.code in ("proxy_error", "upstream_unreachable")


def test_resolve_pinning_is_honoured(raw_server):
    server = raw_server(sse_complete)
    pinned = [f"pinned.invalid:{server.port}:127.0.0.1"]
    with new_session(config(), resolve=pinned) as session:
        with post(session, f"http://pinned.invalid:{server.port}/c") as response:
            b"".join(response.iter_content())
    assert f"Host: pinned.invalid:{server.port}".encode() in server.requests[0]
    with new_session(config()) as session:  # the same name, not pinned, does not resolve
        with pytest.raises(errors.UpstreamError) as caught:
            with upstream_errors("conversation"):
                post(session, f"http://pinned.invalid:{server.port}/c")
    assert caught.value.code == "upstream_unreachable"


def _sigpipe_handler_address() -> int:
    """The process's SIGPIPE handler as the kernel has it (not Python's cached view)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    old = ctypes.create_string_buffer(256)  # struct sigaction; the handler comes first
    assert libc.sigaction(signal.SIGPIPE, None, old) == 0
    return ctypes.c_void_p.from_buffer(old).value or 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads sigaction via glibc")
# The public reader's transfer is curl_cffi's own: only the multi-handle reader is ours to check.
@pytest.mark.parametrize("reader", ["multi-handle"], indirect=True)
def test_reading_the_stream_leaves_the_sigpipe_handler_alone(raw_server, reader, monkeypatch):
    """curl saves, sets and restores SIGPIPE around each multi_perform unless told NOSIGNAL:
    three system calls at every upstream event, for nothing (Python ignores SIGPIPE and curl
    sends with MSG_NOSIGNAL). Seen from inside the write callback, the handler stays ours."""
    seen = []

    start = curl_transfer.Transfer.start

    def watched_start(self, *args, sink, **kwargs):
        def watched_sink(chunk):  # called by the write callback, inside curl_multi_perform
            seen.append(_sigpipe_handler_address())
            return sink(chunk)
        return start(self, *args, sink=watched_sink, **kwargs)

    monkeypatch.setattr(curl_transfer.Transfer, "start", watched_start)
    previous = signal.signal(signal.SIGPIPE, lambda *_: None)
    try:
        ours = _sigpipe_handler_address()
        server = raw_server(sse_complete)
        with new_session(config()) as session, post(session, server.url + "/c") as response:
            assert b"".join(response.iter_content()) == b"data: one\n\ndata: two\n\n"
    finally:
        signal.signal(signal.SIGPIPE, previous)
    assert ours not in (0, 1)  # neither SIG_DFL nor SIG_IGN: Python's handler
    assert seen and all(handler == ours for handler in seen)


class KeepAliveServer(LoopbackSocketServer):
    """Answers every request of a connection with an event stream whose body ends (chunked
    encoding's last chunk) `end_after` seconds after its [DONE]; counts the connections."""

    def __init__(self, end_after: float):
        self.end_after = end_after
        self.connections = 0
        self.release = threading.Event()  # ends the waits at teardown
        super().__init__()

    def handle(self, conn, client_port):
        self.connections += 1
        with conn:
            buffered = b""
            while (request := read_http_request(conn, buffered)) is not None:
                buffered = request[2]
                try:
                    conn.sendall(SSE_HEAD + chunk(b"data: one\n\n")
                                 + chunk(b"data: [DONE]\n\n"))
                    self.release.wait(self.end_after)
                    conn.sendall(b"0\r\n\r\n")
                except OSError:  # the client left
                    return

    def stop(self):
        self.release.set()
        super().stop()


def read_to_done(response) -> bytes:
    """The body up to [DONE], as the answer's reader stops there."""
    body = b""
    for piece in response.iter_content():
        body += piece
        if b"[DONE]" in body:
            return body
    return body


def two_streams(server, finish_within: float) -> None:
    with new_session(config()) as session:
        for _ in range(2):
            with post(session, server.url + "/c") as response:
                assert read_to_done(response).endswith(b"data: [DONE]\n\n")
                response.finish(finish_within)


@pytest.mark.parametrize("reader", ["multi-handle"], indirect=True)
def test_a_body_that_ends_soon_after_done_is_finished_and_its_connection_kept(reader):
    # The end of the body is a write of its own, 0.2 s after [DONE]: finishing the response
    # reads it, so the session's next request rides the same connection.
    server = KeepAliveServer(end_after=0.2)
    try:
        two_streams(server, finish_within=30)
        assert server.connections == 1
    finally:
        server.stop()


@pytest.mark.parametrize("reader", ["multi-handle"], indirect=True)
def test_a_body_that_does_not_end_in_time_is_cut_and_its_connection_closed(reader):
    server = KeepAliveServer(end_after=60)
    try:
        two_streams(server, finish_within=0.1)  # returns: finishing waits only its bound
        assert server.connections == 2
    finally:
        server.stop()
