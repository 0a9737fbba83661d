"""`FakeOpenAI`: the fake API served on 127.0.0.1 by a threaded werkzeug server.

Connections are kept open between requests (HTTP/1.1 keep-alive), as the real APIs keep them:
werkzeug's development server closes every connection after one answer, so a relay in front of
it had to connect again for every request, which no real upstream makes it do.

    fake = FakeOpenAI().start()          # fake.base_url == "http://127.0.0.1:<port>/v1"
    fake.fault("sk-fake-good-1", "cut_after:3")
    fake.requests                        # every request received, newest last
    fake.stop()
"""
from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_fake_app

DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo-instruct", "text-embedding-3-small",
                  "omni-moderation-latest", "dall-e-3", "tts-1", "whisper-1")
# Connections the kernel holds for the accept loop. werkzeug listens with 128: a burst of more
# simultaneous connects (bench/relay.py sends 200 at once) overflowed it, and each refused SYN
# waited out the client's one-second retry, which made the fake look randomly slow. A real API
# takes such a burst; so does the service (gunicorn listens with 2048).
LISTEN_BACKLOG = 1024
# Seconds a kept-alive connection may wait for its next request (then the fake closes it).
KEEP_ALIVE_SECONDS = 60
# Largest request body read whole before the app runs (keep-alive needs all of it read).
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class FakeRequest:
    """One request as received. `key` is the bearer; `headers` (lower-case) exclude it."""

    method: str
    path: str
    key: str | None
    headers: dict[str, str]
    body: bytes
    json: object = None
    client_port: int | None = None  # the client's end of the connection it came on


@dataclass
class _Fault:
    name: str
    times: int | None  # None: every request
    served: int = 0


@dataclass
class _Script:
    faults: dict[str, _Fault] = field(default_factory=dict)


class _QuietHandler(WSGIRequestHandler):
    """No access log; no traceback for the streams the fake breaks on purpose."""

    def log_request(self, code="-", size="-") -> None:
        pass

    def log_error(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


class _KeepAliveHandler(_QuietHandler):
    """HTTP/1.1 with keep-alive: after an answer the connection waits for the next request.

    werkzeug's own `run_wsgi` closes every connection, because it cannot tell where an unread
    request body ends. Here the body (Content-Length) is read whole before the app runs, so the
    next request starts right after it; a chunked request body, which the real API's clients do
    not send, goes to werkzeug's handler and closes the connection as before. Each chunk of a
    streamed answer goes out in one write (size line, data and CRLF together), as a production
    server sends it, rather than werkzeug's four.
    """

    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_SECONDS
    # TCP_NODELAY, as production servers set it: the head and the first event are two writes,
    # and on a kept-alive connection (past TCP's quick-ACK start) Nagle held the second until
    # the client's delayed ACK of the first, up to 40 ms later.
    disable_nagle_algorithm = True

    def run_wsgi(self) -> None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or not (length or "0").isdigit() \
                or int(length or 0) > MAX_BODY_BYTES:
            self.close_connection = True
            super().run_wsgi()
            return
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = self.rfile.read(int(length or 0))
        self.environ = environ = self.make_environ()
        environ["wsgi.input"] = io.BytesIO(body)
        answer = _Answer(self, environ["REQUEST_METHOD"] == "HEAD")
        try:
            chunks = self.server.app(environ, answer.start)
            try:
                for data in chunks:
                    answer.write(data)
                answer.end()
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        except (ConnectionError, TimeoutError, OSError):
            self.close_connection = True  # the client left, or the app cut the connection
        except Exception:
            self.close_connection = True
            if answer.head_sent:
                raise
            self.wfile.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
            raise


class _Answer:
    """The status, headers and body of one answer on a kept-alive connection."""

    def __init__(self, handler: _KeepAliveHandler, head_only: bool):
        self.handler, self.head_only = handler, head_only
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.head_sent = self.chunked = False

    def start(self, status: str, headers, exc_info=None):
        if exc_info and self.head_sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, list(headers)
        return self.write

    def _head(self) -> bytes:
        code = int(self.status.split(None, 1)[0])
        names = {name.lower() for name, _ in self.headers}
        self.chunked = ("content-length" not in names and not self.head_only
                        and code >= 200 and code not in (204, 304))
        lines = [f"HTTP/1.1 {self.status}", *(f"{name}: {value}" for name, value in self.headers)]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        if self.handler.close_connection:
            lines.append("Connection: close")
        self.head_sent = True
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def write(self, data: bytes) -> None:
        out = self._head() if not self.head_sent else b""
        if data and self.chunked:
            out += b"%x\r\n%s\r\n" % (len(data), data)
        elif data:
            out += data
        if out:
            self.handler.wfile.write(out)

    def end(self) -> None:
        if not self.head_sent:
            self.write(b"")
        if self.chunked:
            self.handler.wfile.write(b"0\r\n\r\n")


class FakeOpenAI:
    """The fake; `requests`, `models` and the scripted faults are open to tests."""

    def __init__(self) -> None:
        self.requests: list[FakeRequest] = []
        # Models listed by GET /models, per key (missing key: DEFAULT_MODELS).
        self.models: dict[str, tuple[str, ...]] = {}
        # Seconds until a rate-limited key's window resets (its 429 headers say so).
        self.ratelimit_reset = 20.0
        # Seconds between two audio chunks of /audio/speech, and between two SSE events.
        self.speech_interval = 0.05
        self.chunk_delay = 0.0
        self.stopping = threading.Event()
        self.url = self.base_url = ""
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = create_fake_app(self)

    def start(self, port: int = 0) -> FakeOpenAI:
        """Serve on 127.0.0.1:`port` (0: a free one) from a daemon thread."""
        self._server = make_server("127.0.0.1", port, self.app, threaded=True,
                                   request_handler=_KeepAliveHandler)
        self._server.socket.listen(LISTEN_BACKLOG)  # listening again only changes the backlog
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self.base_url = self.url + "/v1"
        # A short poll interval: stop() (shutdown) waits for one.
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def reset(self) -> None:
        """Forget faults, models and recorded requests."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
        self.models.clear()
        self.ratelimit_reset = 20.0

    def fault(self, key: str, name: str, times: int | None = None) -> None:
        """Give requests with `key` ("*": any key) the fault `name`, `times` times (None: always).

        Faults: "status:<code>" (JSON error), "ratelimit" (the 429 of a rate-limited key),
        "html_page" (a Cloudflare-like 403 page), "bad_json"
        (a 200 that is not JSON), "first_event_error", "empty_stream", "cut_after:<n>" (the
        connection drops after n chunks), "stall_after:<n>", "slow_first_event:<seconds>"
        (headers at once, the first event later), "no_done", "linger_after_done:<seconds>" (the
        body ends that long after its [DONE]).
        """
        with self._lock:
            self._faults[key] = _Fault(name, times)

    def requests_to(self, suffix: str) -> list[FakeRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix)]

    def keys_used(self, suffix: str) -> list[str | None]:
        return [r.key for r in self.requests_to(suffix)]

    # --- used by the app ----------------------------------------------------------------------
    def record(self, request: FakeRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def take_fault(self, key: str | None) -> str | None:
        """The fault for this request with `key`, if one is scripted and not used up."""
        with self._lock:
            for candidate in (key or "", "*"):
                fault = self._faults.get(candidate)
                if fault and (fault.times is None or fault.served < fault.times):
                    fault.served += 1
                    return fault.name
        return None

    def models_for(self, key: str | None) -> tuple[str, ...]:
        return self.models.get(key or "", DEFAULT_MODELS)
