"""The service under the attacks of issue 13, on loopback only, bounded in count and time.

    python bench/abuse.py
    python bench/abuse.py --slow-sockets 1000 --slow-seconds 30

It starts the service as README's start command does (`gunicorn -c gunicorn.conf.py wsgi:app`,
default settings apart from the emulator's URL), the repository's emulator, and a hostile
upstream that forwards everything to the emulator except the conversation POST, which it answers
with one endless line. It prints, for that default deployment:

1. peak memory growth of the server's processes while 4 clients each send a 100 MB body at once
   (with Content-Length, then chunked): target, no growth beyond MAX_REQUEST_BYTES per request;
2. the share of probes answered (GET /healthz from 127.0.0.2, another client) while 1,000 slow
   sockets from 127.0.0.1 dribble their requests: target 100 %;
3. worker CPU seconds spent on one /v1 request of 20,000 empty messages: target under 1 s or
   refused;
4. memory growth while a reverse_proxy the caller controls sends one endless line: target
   bounded by MAX_UPSTREAM_EVENT_BYTES.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from concurrency import PeakMemory, memory, service_pids, start_emulator  # noqa: E402

from tests.servers import ServerProcess, free_port, stop_process  # noqa: E402


def tree_rss(root: int) -> int:
    """Summed RSS in bytes of process `root` and its descendants (the gunicorn master and
    workers)."""
    return memory(service_pids(root), with_pss=False)[0]

MB = 2**20


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))


# --- 1. large bodies ------------------------------------------------------------------------

def send_large_body(port: int, size: int, chunked: bool) -> str:
    """Send up to `size` bytes of body as fast as the server takes them; the status line."""
    head = "POST /send_message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {size}\r\n\r\n"
    piece = b" " * MB
    if chunked:
        piece = b"%x\r\n%s\r\n" % (len(piece), piece)
    with connect(port, timeout=30) as sock:
        sock.sendall(head.encode())
        sent = 0
        try:
            while sent < size:
                sock.sendall(piece)
                sent += MB
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed: what we want
        try:
            return sock.recv(200).split(b"\r\n")[0].decode() or "closed"
        except OSError as error:
            return type(error).__name__


def large_bodies(server: ServerProcess, port: int) -> None:
    for chunked in (False, True):
        baseline = tree_rss(server.process.pid)
        answers: list[str] = []
        with PeakMemory(server.process.pid) as memory:
            def one(chunked=chunked, answers=answers):
                answers.append(send_large_body(port, 100 * MB, chunked))

            threads = [threading.Thread(target=one) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        kind = "chunked" if chunked else "Content-Length"
        print(f"1. 4 x 100 MB bodies ({kind}): peak growth {(memory.rss - baseline) / MB:.1f} MB;"
              f" answers {sorted(set(answers))}", flush=True)


# --- 2. slow sockets ------------------------------------------------------------------------

def probe(port: int) -> bool:
    try:
        with connect(port, source="127.0.0.2", timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def slow_sockets(port: int, count: int, seconds: float) -> None:
    sockets = []
    for index in range(count):
        try:
            sock = connect(port, timeout=2)
            start = b"POST /send_message HTTP/1.1\r\nHost: x\r\n"
            if index % 2:  # half announce a body they never send
                start += b"Content-Length: 1000\r\n\r\n{"
            sock.sendall(start)
            sock.setblocking(False)
            sockets.append(sock)
        except OSError:
            pass
    answered = asked = 0
    deadline = time.monotonic() + seconds
    next_drip = time.monotonic() + 1
    while time.monotonic() < deadline:
        asked += 1
        answered += probe(port)
        if time.monotonic() >= next_drip:  # one more byte from every slow socket
            for sock in sockets:
                try:
                    sock.send(b"X")
                except OSError:
                    pass
            next_drip = time.monotonic() + 1
        time.sleep(0.2)
    still_open = 0
    for sock in sockets:
        try:
            still_open += sock.recv(1, socket.MSG_PEEK) is None
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    print(f"2. {count} slow sockets for {seconds:.0f}s ({len(sockets)} connected, {still_open} "
          f"still held at the end): {answered}/{asked} probes answered "
          f"({answered / max(asked, 1):.0%})", flush=True)


# --- 3. many messages -----------------------------------------------------------------------

def worker_cpu_seconds(root: int) -> float:
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def many_messages(server: ServerProcess, port: int, count: int) -> None:
    body = json.dumps({"model": "gpt-4o",
                       "messages": [{"role": "user", "content": ""}] * count}).encode()
    before = worker_cpu_seconds(server.process.pid)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                     {"Authorization": "Bearer x",
                                      "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    time.sleep(0.5)
    spent = worker_cpu_seconds(server.process.pid) - before
    print(f"3. /v1 request of {count} empty messages ({len(body) / 1000:.0f} KB): HTTP {status}, "
          f"{spent:.2f} CPU seconds in the workers", flush=True)


# --- 4. endless line ------------------------------------------------------------------------

def hostile_upstream(emulator_url: str, limit: int) -> http.server.ThreadingHTTPServer:
    """Forwards to the emulator, but answers the conversation POST with one endless line."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "connection")}
            request = urllib.request.Request(emulator_url + self.path, body, headers,
                                             method=self.command)
            try:
                answer = urllib.request.urlopen(request, timeout=30)
            except urllib.error.HTTPError as error:
                answer = error
            data = answer.read()
            self.send_response(answer.status if hasattr(answer, "status") else answer.code)
            for name, value in answer.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _forward

        def do_POST(self):
            if not self.path.rstrip("/").endswith("/conversation"):
                return self._forward()
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            sent, piece = 0, b"x" * 65536
            try:
                self.wfile.write(b"data: ")
                while sent < limit:
                    self.wfile.write(piece)
                    sent += len(piece)
            except OSError:
                pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def endless_line(server: ServerProcess, port: int, hostile_port: int, token: str) -> None:
    form = urllib.parse.urlencode({
        "access_token": token, "prompt": "hi",
        "reverse_proxy": f"http://127.0.0.1:{hostile_port}/backend-api/conversation"}).encode()
    baseline = tree_rss(server.process.pid)
    began = time.monotonic()
    with PeakMemory(server.process.pid) as memory:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/send_message", form,
                                        timeout=120) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
    code = json.loads(body).get("code") if body.startswith(b"{") else "?"
    print(f"4. endless upstream line (up to 256 MB offered): HTTP {status} {code} after "
          f"{time.monotonic() - began:.1f}s; peak growth {(memory.rss - baseline) / MB:.1f} MB",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow-sockets", type=int, default=1000)
    parser.add_argument("--slow-seconds", type=float, default=30)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.slow_sockets + 512)),
                                                hard))

    emulator, emulator_url, token, _ = start_emulator(0.05, "2026")
    hostile = hostile_upstream(emulator_url, 256 * MB)
    workdir = tempfile.mkdtemp(prefix="chatgpt_web-abuse-")
    service = ServerProcess.gunicorn({
        "CHATGPT_BASE_URL": emulator_url, "CACHE_DIR": os.path.join(workdir, "cache"),
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(workdir, "metrics"), "LOG_LEVEL": "WARNING",
        "CHATGPT_ALLOWED_PROXIES": f"http://127.0.0.1:{hostile.server_address[1]}/",
    })
    port = int(service.url.rsplit(":", 1)[1])
    try:
        service.wait_until_serving()
        print(f"service: gunicorn.conf.py defaults on 127.0.0.1:{port}; "
              f"{os.cpu_count()} CPUs", flush=True)
        large_bodies(service, port)
        slow_sockets(port, args.slow_sockets, args.slow_seconds)
        many_messages(service, port, args.messages)
        endless_line(service, port, hostile.server_address[1], token)
    finally:
        service.stop()
        hostile.shutdown()
        stop_process(emulator, 10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
