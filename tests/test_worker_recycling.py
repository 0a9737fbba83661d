"""An idle worker that kept too much memory after a burst is replaced by a fresh one
(buffered_worker.py, WORKER_RECYCLE_MB), without a request being refused or lost meanwhile."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from chatgpt_web.buffered_worker import MALLOC_TRIM, TRIM_AFTER, hold_name
from tests.servers import ServerProcess, http_request

RECYCLED = "recycling this idle worker"

pytestmark = pytest.mark.skipif(
    MALLOC_TRIM is None or hold_name("chatgpt_web-test-probe") is None,
    reason="worker recycling needs glibc's malloc_trim and Linux abstract socket names")


def open_streams(url: str, token: str, count: int) -> list[socket.socket]:
    """`count` streamed /send_message requests sent at once, each read until its first event."""
    host, port = url.removeprefix("http://").split(":")
    body = f"access_token={token}&prompt={'+'.join(f'w{i}' for i in range(60))}&stream=true"
    request = (b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
               b"Content-Type: application/x-www-form-urlencoded\r\n"
               + f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
    streams = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(request)
        streams.append(sock)
    for sock in streams:
        received = b""
        while b"data:" not in received:
            piece = sock.recv(4096)
            assert piece, received
            received += piece
        assert received.startswith(b"HTTP/1.1 200"), received
    return streams


class Prober:
    """Requests one after another, each on a fresh connection, from a thread, until stopped;
    `answers` holds each one's status or the error that took its place."""

    def __init__(self, url: str):
        self.url, self.answers = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(http_request(self.url, path="/healthz", timeout=10)[0])
            except OSError as exc:
                self.answers.append(repr(exc))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(15)


def serve(tmp_path, emulator, workers: int, log_level: str = "info") -> ServerProcess:
    switches = emulator.switches  # 60 events 0.05 s apart: every stream outlasts the opening
    switches.chunking, switches.words_per_delta, switches.chunk_delay = False, 1, 0.05
    process = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(3 * TRIM_AFTER),
        "WORKER_RECYCLE_MB": "1", "MAX_CONNECTIONS_PER_IP": "0", "RATE_LIMIT_IP": "off",
        "LOG_LEVEL": log_level, "CHATGPT_BASE_URL": emulator.url, "CHATGPT_AUTH_URL": emulator.url})
    process.wait_until_serving()
    return process


def wait_for(condition, process: ServerProcess, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, process.output()[-3000:]
        time.sleep(0.1)


def test_a_worker_left_large_by_a_burst_is_replaced_while_requests_keep_being_served(
        tmp_path, emulator, token):
    process = serve(tmp_path, emulator, workers=2)
    try:
        wait_for(lambda: len(process.worker_pids()) == 2, process)
        before = process.worker_pids()
        with Prober(process.url) as prober:
            # 2 x TRIM_AFTER streams over two workers: at least one served TRIM_AFTER at once.
            for stream in open_streams(process.url, token, 2 * TRIM_AFTER):
                stream.close()  # each ends at its next write; then its worker is idle
            wait_for(lambda: RECYCLED in process.output(), process)
            # The master forks a fresh worker in the leaver's place; requests go on meanwhile.
            wait_for(lambda: len(process.worker_pids() - before) == 1
                     and len(process.worker_pids()) == 2, process)
            served_at_recycle = len(prober.answers)
            wait_for(lambda: len(prober.answers) > served_at_recycle + 20, process)
        assert prober.answers and set(prober.answers) == {200}, prober.answers
        # The fresh worker serves streams like any other.
        for stream in open_streams(process.url, token, 4):
            stream.close()
    finally:
        log = process.stop()
    assert "Traceback" not in log, log[-3000:]


def test_a_lone_worker_is_never_recycled(tmp_path, emulator, token):
    # Nobody else would accept connections while its replacement starts.
    process = serve(tmp_path, emulator, workers=1, log_level="debug")
    try:
        [worker] = process.worker_pids()
        for stream in open_streams(process.url, token, TRIM_AFTER):
            stream.close()
        # The burst's trim, where a worker with a sibling would become due; then more idle scans.
        wait_for(lambda: "requests at once: resident memory" in process.output(), process)
        time.sleep(3)
        assert http_request(process.url, path="/healthz", timeout=10)[0] == 200
        assert process.worker_pids() == {worker}
    finally:
        log = process.stop()
    assert RECYCLED not in log
