"""A webhook collector on a loopback port, for the alert tests: every JSON body POSTed to it
lands in `.bodies`. The `receiver` fixture gives each test one (a plugin of tests/conftest.py)."""
from __future__ import annotations

import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Receiver:
    def __init__(self):
        self.bodies: queue.Queue = queue.Queue()
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length", 0))
                bodies.put(json.loads(self.rfile.read(min(length, 1 << 20))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def received(self, wait: float = 5.0) -> list[dict]:
        """The bodies received until `wait` seconds pass without a new one."""
        found = []
        while True:
            try:
                found.append(self.bodies.get(timeout=wait))
            except queue.Empty:
                return found
            wait = 0.5

    def take(self, count: int, timeout: float = 20.0) -> list[dict]:
        """The next `count` bodies, each within `timeout` seconds (queue.Empty fails the test):
        for a known number of alerts, which a loaded machine may send far apart."""
        return [self.bodies.get(timeout=timeout) for _ in range(count)]

    def wait_for(self, condition: str, timeout: float = 20.0) -> dict:
        """The first alert of `condition` received within `timeout` seconds."""
        while True:
            body = self.bodies.get(timeout=timeout)  # queue.Empty fails the test
            if body.get("condition") == condition:
                return body

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()
