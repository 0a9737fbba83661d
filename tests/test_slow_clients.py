"""Slow clients against the production server command (buffered_worker.py)."""
from __future__ import annotations

import errno
import json
import socket
import ssl
import threading
import time

import pytest
import trustme

from chatgpt_web import stream_pump
from chatgpt_web.buffered_worker import (
    COMPLETE,
    HEADERS_TOO_LARGE,
    INCOMPLETE,
    MALLOC_TRIM,
    TOO_LARGE,
    TRIM_AFTER,
    BoundedSendSocket,
    ClientStalled,
    PendingRequest,
    ShrinkingThreadPool,
)
from tests.servers import ServerProcess, http_request


def feed_all(pieces, max_body=1000):
    pending = PendingRequest(max_body)
    return [pending.feed(piece) for piece in pieces]


def test_a_request_is_complete_only_with_its_whole_body():
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n"
    assert feed_all([head[:10], head[10:], b"12345", b"67890"]) == [
        INCOMPLETE, INCOMPLETE, INCOMPLETE, COMPLETE]
    assert feed_all([b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]) == [COMPLETE]


def test_a_chunked_body_is_complete_at_its_last_chunk():
    head = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert feed_all([head, b"5\r\nhel", b"lo\r\n", b"0\r\n", b"\r\n"]) == [
        INCOMPLETE, INCOMPLETE, INCOMPLETE, INCOMPLETE, COMPLETE]
    assert feed_all([head + b"zz\r\n"]) == [COMPLETE]  # malformed: gunicorn answers 400
    assert feed_all([head + b"800\r\n"], max_body=1000) == [TOO_LARGE]


def test_an_announced_body_over_the_limit_goes_straight_to_the_app():
    # The app refuses it from Content-Length without reading it (tests/test_intake.py).
    assert feed_all([b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"]) == [COMPLETE]


def test_endless_headers_are_refused():
    assert feed_all([b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 20_000]) == [HEADERS_TOO_LARGE]


# --- writing an answer to a client that reads slowly, or not at all (CLIENT_SEND_TIMEOUT) ---------

def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """A TCP connection on 127.0.0.1 with small buffers: (the server's end, the client's end)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(30)
        client.connect(listener.getsockname())
        server_end, _ = listener.accept()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    return server_end, client


def run_where(where: str, write) -> None:
    """Run `write` in a request thread (this one) or as a body in a stream pump."""
    if where == "request thread":
        write()
    elif not stream_pump.AVAILABLE:
        pytest.skip("the stream pump needs greenlet and epoll")
    else:
        stream_pump.Pump(name="test-pump").serve(write)


@pytest.mark.parametrize("where", ["request thread", "stream pump"])
def test_a_write_is_bounded_by_the_time_without_progress_not_by_its_length(where):
    # 150 KB in one write to a client that takes 4 KB every 0.05 s: about 2 s in all, four times
    # the bound, but never 0.5 s without a byte taken. It is sent whole.
    server_end, client = loopback_pair()
    answer = bytes(range(256)) * 600
    received = bytearray()

    def read_slowly():
        while len(received) < len(answer) and (piece := client.recv(4096)):
            received.extend(piece)
            time.sleep(0.05)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    started = time.monotonic()
    run_where(where, lambda: BoundedSendSocket(server_end, send_timeout=0.5).sendall(answer))
    reader.join(30)
    assert received == answer and time.monotonic() - started > 1.0
    server_end.close()
    client.close()


@pytest.mark.parametrize("where", ["request thread", "stream pump"])
def test_a_write_the_client_takes_nothing_of_ends_after_the_bound_as_if_it_had_left(where):
    server_end, client = loopback_pair()
    started = time.monotonic()
    with pytest.raises(ClientStalled) as stalled:  # the client never reads
        run_where(where, lambda: BoundedSendSocket(server_end, send_timeout=0.5)
                  .sendall(bytes(1_000_000)))
    assert 0.5 <= time.monotonic() - started < 5
    # What gunicorn and the app take for a client that left (no traceback, the body closed).
    assert isinstance(stalled.value, ConnectionResetError)
    assert stalled.value.errno == errno.ECONNRESET
    server_end.close()  # a reset: the rest of the answer is dropped, not kept for the client
    with pytest.raises(ConnectionResetError):
        while client.recv(65536):
            pass
    client.close()


@pytest.fixture
def server(tmp_path):
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "MAX_CONNECTIONS_PER_IP": "40",
        "REQUEST_HEADER_TIMEOUT": "3", "REQUEST_BODY_TIMEOUT": "2",
    })
    try:
        process.wait_until_serving()
        yield process
    finally:
        process.stop()


def slow_socket(url: str, start: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(start)
    return sock


def probe(url: str) -> int:
    """GET /healthz from another loopback address (another client), on a fresh connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=3,
                                  source_address=("127.0.0.2", 0)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return int(sock.recv(100).split(b" ")[1])


def test_slow_clients_do_not_hold_the_threads_other_clients_need(server):
    # Ten times more dribbling clients than threads: with plain gthread each holds a thread.
    sockets = [slow_socket(server.url, b"POST /send_message HTTP/1.1\r\nHost: x\r\n")
               for _ in range(20)]
    sockets += [slow_socket(server.url, b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 1000\r\n\r\n{")  # announces more than it sends
                for _ in range(20)]
    try:
        time.sleep(0.5)
        assert [probe(server.url) for _ in range(5)] == [200] * 5
    finally:
        for sock in sockets:
            sock.close()


def test_clients_that_keep_their_socket_open_after_the_answer_hold_up_no_one(server):
    # After a `Connection: close` answer the worker must not wait for the client to close its
    # side: gunicorn 27 waits up to 2 s for it in the worker's one event loop, so each of these
    # twenty clients, who read their answer and keep the socket open, held up the next by 2 s
    # (38 s in all, far beyond the bound below). Each is answered while all before it still
    # hold their sockets open.
    held = []
    deadline = time.monotonic() + 30
    try:
        for _ in range(20):
            sock = slow_socket(server.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: close\r\n\r\n")
            held.append(sock)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
        assert time.monotonic() < deadline
        assert probe(server.url) == 200
    finally:
        for sock in held:
            sock.close()


def test_a_body_shorter_than_announced_is_given_up_with_408(server):
    sock = slow_socket(server.url, b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
                                   b"Content-Length: 1000\r\n\r\n{")
    started = time.monotonic()
    answer = sock.recv(1000)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < 6
    sock.close()


def test_one_address_holds_at_most_its_share_of_connections(server):
    sockets = [slow_socket(server.url, b"GET / HTTP/1.1\r\n") for _ in range(45)]
    try:
        time.sleep(0.5)
        closed = 0
        for sock in sockets:
            sock.setblocking(False)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except BlockingIOError:
                pass  # still open, waiting for the rest of its request
        assert len(sockets) - closed <= 40 and closed >= 5  # the cap, whatever else is open
        assert probe(server.url) == 200  # another address is still served
    finally:
        for sock in sockets:
            sock.close()


def test_kept_alive_connections_and_bodies_are_served_as_before(server):
    import http.client

    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        for _ in range(3):  # one connection, three requests: each read whole again
            connection.request("POST", "/send_message", body=b'{"prompt": "x"}',
                               headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            assert answer.status == 400 and b"missing_field" in answer.read()
    finally:
        connection.close()


def test_a_client_that_leaves_a_non_streamed_answer_stops_its_upstream_transfer(tmp_path,
                                                                                emulator, token):
    switches = emulator.switches  # 40 words, one event each, 0.3 s apart: 12 s to the end
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.3
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "CHATGPT_BASE_URL": emulator.url,
        "CHATGPT_AUTH_URL": emulator.url})
    try:
        process.wait_until_serving()
        prompt = "+".join(f"w{i}" for i in range(40))
        body = f"access_token={token}&prompt={prompt}".encode()
        sock = slow_socket(process.url, b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/x-www-form-urlencoded\r\n"
                           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(1.5)
        sock.close()  # gone before the answer is complete
        time.sleep(2.5)
    finally:
        log = process.stop()
    [line] = [line for line in log.splitlines() if "route=/send_message" in line]
    duration_ms = float(line.split("duration_ms=")[1].split()[0])
    assert "status=499" in line and duration_ms < 4000, line


def test_a_request_that_finds_every_thread_streaming_is_refused_busy_not_queued(tmp_path,
                                                                               emulator, token):
    # One thread, held by a stream of 100 events 0.2 s apart (20 s): a second request must not
    # wait for that stream's end but be told at once to come back.
    switches = emulator.switches
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.2
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "1", "CHATGPT_BASE_URL": emulator.url,
        "CHATGPT_AUTH_URL": emulator.url, "USAGE_TOKENIZER": "lazy"})
    try:
        process.wait_until_serving()
        prompt = "+".join(f"w{i}" for i in range(100))
        body = f"access_token={token}&prompt={prompt}&stream=true".encode()
        deadline = time.monotonic() + 30
        while True:  # the health check before may hold the thread a moment longer: 503 busy
            stream = slow_socket(process.url, b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Type: application/x-www-form-urlencoded\r\n"
                                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            stream.settimeout(30)
            received = b""
            while b"data:" not in received and b"busy" not in received:
                piece = stream.recv(4096)
                assert piece, received
                received += piece
            if received.startswith(b"HTTP/1.1 200"):
                break  # the stream has the thread
            assert b"busy" in received and time.monotonic() < deadline, received
            stream.close()
            time.sleep(0.1)

        status, headers, answer = http_request(process.url, path="/healthz", timeout=10)
        assert status == 503 and headers["retry-after"] == "1"
        assert json.loads(answer)["code"] == "busy"

        stream.close()  # the stream ends at its next write; its thread serves again
        deadline = time.monotonic() + 30
        while http_request(process.url, path="/healthz", timeout=10)[0] != 200:
            assert time.monotonic() < deadline, "the thread was never freed"
            time.sleep(0.1)
    finally:
        process.stop()


def test_a_client_that_waits_for_each_answer_is_never_refused_busy(tmp_path):
    # Regression: a thread that has sent its answer still counted as serving until it returned,
    # and on a loaded machine the client's next request could arrive first and be refused 503
    # busy by a server with nothing left to do. One thread, requests one after another on fresh
    # connections: every one is answered.
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "1", "MAX_CONNECTIONS_PER_IP": "0",
        "RATE_LIMIT_IP": "off"})
    try:
        process.wait_until_serving()
        statuses = [http_request(process.url, path="/healthz", timeout=10)[0]
                    for _ in range(300)]
        assert statuses.count(200) == len(statuses), sorted(set(statuses))
    finally:
        process.stop()


def test_after_a_burst_an_idle_worker_gives_free_memory_back(tmp_path, emulator, token):
    # TRIM_AFTER streams at once; once all have ended and the worker serves nothing, it returns
    # the allocator's free memory (glibc's malloc_trim) and says so at debug level. Not before.
    if MALLOC_TRIM is None:
        pytest.skip("the C library has no malloc_trim")
    switches = emulator.switches  # 200 events 0.1 s apart: every stream outlasts the opening
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.1
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": str(2 * TRIM_AFTER),
        "MAX_CONNECTIONS_PER_IP": "0", "RATE_LIMIT_IP": "off", "LOG_LEVEL": "debug",
        "CHATGPT_BASE_URL": emulator.url, "CHATGPT_AUTH_URL": emulator.url})
    given_back = "requests at once: resident memory"
    streams = []
    try:
        process.wait_until_serving()
        for _ in range(3):  # requests one at a time are no burst
            assert http_request(process.url, path="/healthz", timeout=10)[0] == 200
        time.sleep(1.5)  # three idle scans of the worker
        assert given_back not in process.output()

        prompt = "+".join(f"w{i}" for i in range(200))
        body = f"access_token={token}&prompt={prompt}&stream=true".encode()
        for _ in range(TRIM_AFTER):  # all sent at once, then each read until it streams
            streams.append(slow_socket(process.url, b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Type: application/x-www-form-urlencoded\r\n"
                                       + f"Content-Length: {len(body)}\r\n\r\n".encode()
                                       + body))
        for stream in streams:
            stream.settimeout(30)
            received = b""
            while b"data:" not in received:
                piece = stream.recv(4096)
                assert piece, received
                received += piece
            assert received.startswith(b"HTTP/1.1 200"), received
        for stream in streams:  # each ends at its next write; then the worker is idle
            stream.close()
        deadline = time.monotonic() + 30
        while given_back not in process.output():
            assert time.monotonic() < deadline, process.output()[-2000:]
            time.sleep(0.2)
    finally:
        for stream in streams:
            stream.close()
        log = process.stop()
    [line] = [line for line in log.splitlines() if given_back in line]
    assert f"idle after {TRIM_AFTER} requests at once" in line


# --- the worker's thread pool -------------------------------------------------------------------

def test_the_pool_runs_work_at_once_and_its_idle_threads_end():
    pool = ShrinkingThreadPool(max_threads=8, idle_seconds=0.3)
    release, started = threading.Event(), threading.Semaphore(0)

    def hold(n):
        started.release()
        assert release.wait(30)
        return n

    running = [pool.submit(hold, n) for n in range(8)]
    for _ in range(8):  # all eight run together: none waits for another to finish
        assert started.acquire(timeout=30)
    assert pool.threads == 8
    release.set()
    assert [future.result(30) for future in running] == list(range(8))
    deadline = time.monotonic() + 30
    while pool.threads:  # idle for 0.3 s: every thread ends
        assert time.monotonic() < deadline, pool.threads
        time.sleep(0.05)
    assert pool.submit(lambda: "again").result(30) == "again"  # a new thread on demand
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_submit_never_waits_for_a_thread_to_start(monkeypatch):
    """Thread.start() waits for the new thread to run, which under load means waiting for the
    GIL: the worker's event loop (the submitter) must not, so other threads start them."""
    starters: list[int] = []
    start = threading.Thread.start

    def noting_start(thread):
        if thread.name == "request":
            starters.append(threading.get_ident())
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", noting_start)
    pool = ShrinkingThreadPool(max_threads=6, idle_seconds=30)
    release, started = threading.Event(), threading.Semaphore(0)

    def hold():
        started.release()
        assert release.wait(30)

    running = [pool.submit(hold) for _ in range(6)]
    for _ in range(6):
        assert started.acquire(timeout=30)
    release.set()
    for future in running:
        future.result(30)
    assert len(starters) == 6 and threading.get_ident() not in starters
    assert pool.threads == 6
    pool.shutdown(wait=False)


def test_an_idle_thread_takes_new_work_instead_of_a_new_thread():
    pool = ShrinkingThreadPool(max_threads=8, idle_seconds=30)
    for _ in range(5):  # one after another: the one idle thread serves them all
        assert pool.submit(threading.get_ident).result(30)
    assert pool.threads == 1
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(30)
    assert pool.threads == 1
    pool.shutdown(wait=False)
    deadline = time.monotonic() + 30
    while pool.threads:  # shutdown wakes the idle thread, which ends
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_tls_client_that_takes_nothing_for_client_send_timeout_is_cut_off(tmp_path, emulator,
                                                                            token):
    # gunicorn's own TLS (certfile): the same bound, on its request threads' writes. The answer
    # (300 words of 20 KB, 0.02 s apart: 6 s) is far more than the socket buffers between us.
    switches = emulator.switches
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.02
    switches.answer_fn = lambda body: " ".join("x" * 20_000 for _ in range(300))
    authority = trustme.CA()
    server_pem = tmp_path / "server.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(server_pem)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "4", "CHATGPT_BASE_URL": emulator.url,
        "CHATGPT_AUTH_URL": emulator.url, "USAGE_TOKENIZER": "lazy",
        "GUNICORN_CMD_ARGS": f"--certfile={server_pem}", "CLIENT_SEND_TIMEOUT": "2",
        "MAX_UPSTREAM_EVENT_BYTES": str(64 << 20), "MAX_UPSTREAM_ANSWER_BYTES": str(64 << 20)})
    host, port = process.url.removeprefix("http://").split(":")

    def tls_socket(receive_buffer: int | None = None) -> ssl.SSLSocket:
        sock = socket.socket()
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(30)
        sock.connect((host, int(port)))
        return client_context.wrap_socket(sock, server_hostname="127.0.0.1")

    try:
        deadline = time.monotonic() + 30
        while True:  # serving once the TLS handshake and /healthz succeed
            try:
                with tls_socket() as probe_socket:
                    probe_socket.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                         b"Connection: close\r\n\r\n")
                    if probe_socket.recv(100).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, process.output()[-3000:]
            time.sleep(0.2)
        body = f"access_token={token}&prompt=big&stream=true".encode()
        slow = tls_socket(receive_buffer=4096)  # never reads its answer
        slow.sendall(b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        cut = process.wait_for_line("outcome=incomplete")
        duration_ms = float(cut.split("duration_ms=")[1].split()[0])
        assert "status=200" in cut and 2000 <= duration_ms < 10_000, cut
        while emulator.streams_left == 0:  # its upstream transfer was closed with it
            assert time.monotonic() < deadline
            time.sleep(0.1)
        received = b""
        try:  # closed: what the client had taken, then the end (a timeout fails the test)
            while piece := slow.recv(65536):
                received += piece
        except (ConnectionResetError, ssl.SSLError):
            pass
        assert b"data: [DONE]" not in received
        slow.close()
    finally:
        process.stop()
    assert process.process.returncode == 0
    assert "Traceback" not in process.output()
