"""Run the production server command in a subprocess on loopback, and talk HTTP to it."""
from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_request(url: str, method: str = "GET", path: str = "/", body: bytes | None = None,
                 headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: (status, headers with lower-case names, body)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return (response.status, {k.lower(): v for k, v in response.getheaders()},
                response.read())
    finally:
        connection.close()



@contextlib.contextmanager
def http_server(handler: type[BaseHTTPRequestHandler], **state) -> Iterator[ThreadingHTTPServer]:
    """A ThreadingHTTPServer of `handler` on 127.0.0.1 (a free port), served from a daemon thread
    for the `with` block; `state` becomes attributes of the server, for the handler to read."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    for name, value in state.items():
        setattr(httpd, name, value)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def read_http_request(conn: socket.socket,
                      buffered: bytes = b"") -> tuple[bytes, bytes, bytes] | None:
    """One HTTP/1.1 request from `conn` (after the bytes already `buffered`), for raw test servers:
    (head without the blank line, body of its Content-Length, bytes read past it), or None when
    the client closes before a whole head."""
    data = buffered
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, data = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(data) < length:
        data += conn.recv(65536)
    return head, data[:length], data[length:]


class LoopbackSocketServer:
    """A listening socket on 127.0.0.1 for raw-bytes test servers: each accepted connection is
    handed, with the client's port, to `handle(conn, client_port)` on a thread of its own."""

    def __init__(self):
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def handle(self, conn: socket.socket, client_port: int) -> None:
        raise NotImplementedError

    def _serve(self) -> None:
        while True:
            try:
                conn, (_, client_port) = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn, client_port), daemon=True).start()

    def stop(self) -> None:
        self._sock.close()


def stop_process(process: subprocess.Popen, grace: float) -> None:
    """End `process` gracefully: SIGTERM, then SIGKILL if it is still running after `grace`
    seconds; return once it has ended."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServerProcess:
    """A server command started in the repository with extra environment; logs go to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, cwd: Path = REPO):
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            argv, cwd=cwd, env={**os.environ, **env}, stdout=self._log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    @classmethod
    def gunicorn(cls, env: dict[str, str], port: int | None = None) -> ServerProcess:
        """`gunicorn -c gunicorn.conf.py wsgi:app` bound to 127.0.0.1 only."""
        port = port or free_port()
        return cls([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                   {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}, port)

    def wait_until_serving(self, timeout: float = 20) -> None:
        """Block until GET /healthz answers 200; fail with the server's output if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n"
                                   f"{self.output()}")
            try:
                if http_request(self.url, path="/healthz", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server did not answer within {timeout}s:\n{self.output()}")

    def worker_pids(self) -> set[int]:
        """Process ids whose parent is this server (gunicorn's workers)."""
        children = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid:
                children.add(int(stat.parent.name))
        return children

    def stop(self) -> str:
        """Stop gracefully (SIGTERM, then SIGKILL after 15 s) and return everything it logged."""
        stop_process(self.process, 15)
        return self.output()

    def output(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait_for_line(self, text: str, timeout: float = 30) -> str:
        """The first line the server logs that holds `text`, once it has; fail with the end of
        its output if none has after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.output().splitlines() if text in line]
            if lines:
                return lines[0]
            assert time.monotonic() < deadline, self.output()[-3000:]
            time.sleep(0.1)
