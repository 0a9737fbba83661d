"""`Emulator`: a fake chatgpt.com on 127.0.0.1, served by a threaded werkzeug server.

    emulator = Emulator().start()
    token = emulator.mint_access_token()
    ... point the client at emulator.url (CHATGPT_BASE_URL) ...
    emulator.switches.fail_with = "cloudflare"
    emulator.stop()

`Emulator(tls=True)` serves https:// as the site does, HTTP/2 by ALPN (HTTP/1.1 for a client that
asks for it; `http2=False`: HTTP/1.1 only), with a certificate of a CA made at start, whose PEM
file is `emulator.ca_file` (tls.py).
"""
from __future__ import annotations

import _thread
import io
import secrets
import socket
import threading
from dataclasses import dataclass

from werkzeug.debug.tbtools import DebugTraceback
from werkzeug.exceptions import InternalServerError
from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from . import tokens
from .app import create_emulator_app
from .auth_pages import AuthPages
from .conduit import ConduitLedger
from .conversations import ConversationStore
from .files import FileStore
from .images import ImageTool
from .sentinel import SentinelLedger, TwoPhaseLedger
from .switches import Switches
from .tls import TlsServer
from .topics import TopicServer

# Seconds a kept-alive connection may wait for its next request before the emulator closes it.
KEEP_ALIVE_SECONDS = 60
# Largest request body read whole before the app runs (keep-alive needs all of it read); a
# larger one is served the werkzeug way, and its connection closed.
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class RecordedRequest:
    """One request as the emulator received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    json: object
    form: dict[str, str]
    args: dict[str, str]
    body: bytes
    time: float
    client_port: int | None = None  # the client's end of the connection it came on
    http_version: str = "HTTP/1.1"  # as the request line (or HTTP/2's framing) gave it


class _Server(ThreadedWSGIServer):
    """werkzeug's threaded server with the listen backlog of a busy site, not its 128: with a
    few hundred connections opened at once (bench/concurrency.py), the 129th and later
    connections' handshakes were dropped and retried a whole second later (ListenOverflows in
    /proc/net/netstat), which chatgpt.com's front does not do to its clients.

    It knows its open connections, so that stopping the emulator closes the kept-alive ones too,
    as a site that went away would (a stopped server that still answered on old connections
    would hide from a test that the upstream is gone).
    """

    request_queue_size = 4096

    def __init__(self, *args, **kwargs) -> None:
        self.connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self.connections.add(request)
        # Not socketserver's Thread(...).start(), which waits until the new thread has run: with
        # a few hundred busy handler threads that is two turns at the GIL, a few milliseconds,
        # for which the accept loop stood still. A burst of new connections then queued behind
        # one another (N=500: the last waited ~1.7 s for its first answer, bench/concurrency.py),
        # which a real site's front does not do. The handler threads are daemons either way
        # (werkzeug's daemon_threads): nothing joins them.
        _thread.start_new_thread(self.process_request_thread, (request, client_address))

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection (their handler threads then end)."""
        with self._connections_lock:
            open_now = list(self.connections)
        for connection in open_now:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(WSGIRequestHandler):
    """werkzeug's handler, keeping connections alive and writing each piece in one send.

    Keep-alive: chatgpt.com keeps a connection open between requests, and the service's four
    requests per 2026 answer ride one connection (chatgpt_web/curl_transfer.py). werkzeug's own
    `run_wsgi` sends `Connection: close` on every answer, because it cannot tell where an unread
    request body ends, and after each answer waits 10 ms for leftover bytes to discard. Here a
    body with a Content-Length is read whole before the app runs, so the next request starts
    right after it; the answer's bytes are werkzeug's (status line, Server, Date, the app's
    headers, chunked framing) without that `Connection: close`. A chunked or oversized request
    body, which no client of the site sends, takes werkzeug's path and closes as before; so does
    a client that asks for it (`Connection: close`, HTTP/1.0).

    One send per piece: unbuffered (socketserver's default), every chunk of a streamed answer
    took four sends (size line, CRLF, data, CRLF). Buffered, they leave together. The emulator,
    which shares the machine with the service it is measured against (bench/concurrency.py),
    spends fewer system calls and GIL hand-overs per event. TCP_NODELAY, as production servers
    set it: on a kept-alive connection Nagle would hold a piece until the client's delayed ACK
    of the previous one (up to 40 ms).
    """

    protocol_version = "HTTP/1.1"
    wbufsize = -1  # io's default buffer, flushed after every piece
    disable_nagle_algorithm = True
    timeout = KEEP_ALIVE_SECONDS  # an idle connection is closed after this (and any stalled read)

    def run_wsgi(self) -> None:
        length = self.headers.get("Content-Length", "0").strip()
        if ("Transfer-Encoding" in self.headers or not length.isdigit()
                or int(length) > MAX_BODY_BYTES):
            self.close_connection = True
            super().run_wsgi()  # werkzeug's: reads what the app reads, drains the rest, closes
            return
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as werkzeug does
            self.wfile.flush()
        body = self.rfile.read(int(length))
        self.environ = environ = self.make_environ()
        environ["wsgi.input"] = io.BytesIO(body)
        answer = _Answer(self, environ["REQUEST_METHOD"] == "HEAD")
        try:
            _run(self.server.app, environ, answer)
        except (ConnectionError, TimeoutError) as error:
            self.close_connection = True
            self.connection_dropped(error, environ)
        except Exception as error:
            self.close_connection = True
            if self.server.passthrough_errors:
                raise
            if not answer.head_sent:  # werkzeug's 500 page, then the error in the log
                try:
                    answer.status = answer.headers = None
                    _run(InternalServerError(), environ, answer)
                except Exception:
                    pass
            self.server.log("error", "Error on request:\n"
                            + DebugTraceback(error).render_traceback_text())

    def log_error(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if format.startswith("Request timed out"):
            return  # an idle kept-alive connection reached KEEP_ALIVE_SECONDS: no error
        super().log_error(format, *args)

    def finish(self) -> None:
        # Closing the buffered writer flushes it: a client that left meanwhile (a test that
        # closed its stream early) is no error of the emulator's, and the traceback socketserver
        # would print for it is formatted with ast.parse, which on CPython 3.11 is not safe
        # beside another thread's ast.parse (gh-106905: werkzeug compiles routes with it).
        try:
            super().finish()
        except ConnectionError:
            pass


def _run(app, environ, answer: _Answer) -> None:
    """Run the WSGI `app` and send what it answers through `answer`."""
    chunks = app(environ, answer.start_response)
    try:
        for data in chunks:
            answer.write(data)
        answer.end()
    finally:
        if hasattr(chunks, "close"):
            chunks.close()


class _Answer:
    """One answer's head and body, framed as werkzeug frames them, each piece in one write."""

    def __init__(self, handler: _Handler, head_only: bool) -> None:
        self.handler, self.head_only = handler, head_only
        self.status: str | None = None
        self.headers: list[tuple[str, str]] | None = None
        self.head_sent = self.chunked = False

    def start_response(self, status: str, headers, exc_info=None):
        if exc_info:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.headers is not None:
            raise AssertionError("Headers already set")
        self.status, self.headers = status, list(headers)
        return self.write

    def _send_head(self) -> None:
        handler = self.handler
        code, _, message = self.status.partition(" ")
        handler.send_response(int(code), message)  # the status line, Server and Date
        names = set()
        for name, value in self.headers:
            handler.send_header(name, value)
            names.add(name.lower())
        self.chunked = not ("content-length" in names or self.head_only
                            or 100 <= int(code) < 200 or int(code) in (204, 304))
        if self.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        if handler.close_connection:
            handler.send_header("Connection", "close")
        handler.end_headers()  # into the buffer: it leaves with the first piece
        self.head_sent = True

    def write(self, data: bytes) -> None:
        if not self.head_sent:
            self._send_head()
        if data:
            self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked
                                     else data)
        self.handler.wfile.flush()

    def end(self) -> None:
        if not self.head_sent:
            self.write(b"")
        if self.chunked:
            self.handler.wfile.write(b"0\r\n\r\n")
            self.handler.wfile.flush()


class _QuietHandler(_Handler):
    """No access log line per request; errors are still logged."""

    def log_request(self, code="-", size="-") -> None:
        pass


class Emulator:
    """The fake backend; its state (switches, conversations, request log) is open to tests."""

    def __init__(self, *, quiet: bool = True, tls: bool = False, http2: bool = True,
                 record_requests: bool = True) -> None:
        self.secret = secrets.token_bytes(64)
        self.switches = Switches()
        # The request log is for tests in this process. An emulator run as a program
        # (__main__.py) keeps none: nobody can read it, and kept it grows without bound, and with
        # it the garbage collector's pauses (bench/concurrency.py measures them).
        self.record_requests = record_requests
        self.requests: list[RecordedRequest] = []
        self.conversations = ConversationStore()
        self.sentinel = SentinelLedger()
        self.two_phase = TwoPhaseLedger()
        self.conduits = ConduitLedger()
        # Handed-off turns waiting for /f/conversation/resume or their WebSocket topic, by
        # conversation id; the WebSocket's listener (topics.py), started on first use.
        self.handoffs: dict = {}
        self.topics = TopicServer(self)
        # Every file: the uploads and the images the model drew (files.py).
        self.files = FileStore()
        # The image tool's knobs and captions (images.py); it keeps its images in self.files.
        self.images = ImageTool(self.files)
        # The login pages (docs/protocol-auth.md): accounts, sessions, refresh tokens, auth
        # switches.
        self.auth = AuthPages(mint=self.mint_access_token)
        self.app = create_emulator_app(self)
        self.url = ""
        self.tls, self.http2 = tls, tls and http2
        self.ca_file: str | None = None  # with tls: the PEM file of the CA to trust
        self.cert_file: str | None = None  # with tls: its key and certificate chain (PEM)
        self._quiet = quiet
        self._server: BaseWSGIServer | TlsServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures_served = 0
        self._streams_started = 0
        # Streams whose client (the service) closed the connection before their end.
        self.streams_left = 0

    def start(self, port: int = 0) -> Emulator:
        """Serve on 127.0.0.1:`port` (0 = a free one) from a daemon thread."""
        if self.tls:
            self._server = TlsServer(self.app, port, http2=self.http2, quiet=self._quiet,
                                     keep_alive=KEEP_ALIVE_SECONDS, max_body_bytes=MAX_BODY_BYTES)
            self.ca_file = self._server.ca_file
            self.cert_file = self._server.cert_file
            self.url = f"https://127.0.0.1:{self._server.port}"
            return self
        handler = _QuietHandler if self._quiet else _Handler
        self._server = _Server("127.0.0.1", port, self.app, handler=handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        # A short poll interval: stop() (shutdown) waits for one.
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02},
                                        name="chatgpt-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.topics.stop()
        if isinstance(self._server, TlsServer):
            self._server.stop()
            self._server = None
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget conversations, issued sentinel tokens, recorded requests and login state;
        default switches."""
        self.switches.restore_defaults()
        self.conversations.clear()
        self.sentinel.clear()
        self.two_phase.clear()
        self.conduits.clear()
        self.handoffs.clear()
        self.topics.reset()
        self.files.clear()
        self.images.clear()
        self.auth.reset()
        with self._lock:
            self.requests.clear()
            self._failures_served = 0
            self._streams_started = 0
            self.streams_left = 0

    def mint_access_token(self, *, exp_in: float = 3600, email: str = "user@example.com",
                          **claims) -> str:
        """An access token this emulator accepts (until `exp_in` seconds from now)."""
        return tokens.mint(self.secret, exp_in=exp_in, email=email, **claims)

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        """Recorded requests whose path ends with `suffix`, e.g. "/conversation"."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith(suffix)]

    # --- used by the views ----------------------------------------------------------------

    def record(self, **fields) -> None:
        if not self.record_requests:
            return
        with self._lock:
            self.requests.append(RecordedRequest(**fields))

    def take_failure(self) -> bool:
        """Whether the current request should get `switches.fail_with` (honours fail_times)."""
        with self._lock:
            if self.switches.fail_with is None:
                return False
            limit = self.switches.fail_times
            if limit is not None and self._failures_served >= limit:
                return False
            self._failures_served += 1
            return True

    def take(self, counter: str) -> bool:
        """Whether a countdown switch (`conduit_null_times`, `reject_writes`) still fires; counts
        it down."""
        with self._lock:
            left = getattr(self.switches, counter)
            if left <= 0:
                return False
            setattr(self.switches, counter, left - 1)
            return True

    def stream_left(self) -> None:
        with self._lock:
            self.streams_left += 1

    def next_stream_number(self) -> int:
        """0, 1, 2, ... per stream since the last reset: seeds each stream's chunking."""
        with self._lock:
            self._streams_started += 1
            return self._streams_started - 1
