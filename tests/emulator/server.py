"""`Emulator`: a fake chatgpt.com on 127.0.0.1, served by a threaded werkzeug server.

    emulator = Emulator().start()
    token = emulator.mint_access_token()
    ... point the client at emulator.url (CHATGPT_BASE_URL) ...
    emulator.switches.fail_with = "cloudflare"
    emulator.stop()
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass

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


class _Server(ThreadedWSGIServer):
    """werkzeug's threaded server with the listen backlog of a busy site, not its 128: with a
    few hundred connections opened at once (bench/concurrency.py), the 129th and later
    connections' handshakes were dropped and retried a whole second later (ListenOverflows in
    /proc/net/netstat), which chatgpt.com's front does not do to its clients."""

    request_queue_size = 4096


class _Handler(WSGIRequestHandler):
    """werkzeug's handler writing each piece of a response in one system call.

    Unbuffered (socketserver's default), every chunk of a streamed answer took four sends: its
    size line, CRLF, the data, CRLF. Buffered, werkzeug's flush after each piece sends them
    together. The bytes are the same; the emulator, which shares the machine with the service
    it is measured against (bench/concurrency.py), spends fewer system calls and GIL hand-overs
    per event.
    """

    wbufsize = -1  # io's default buffer; werkzeug flushes it after every piece it writes

    def finish(self) -> None:
        # Closing the buffered writer flushes it: a client that left meanwhile (a test that
        # closed its stream early) is no error of the emulator's, and the traceback socketserver
        # would print for it is formatted with ast.parse, which on CPython 3.11 is not safe
        # beside another thread's ast.parse (gh-106905: werkzeug compiles routes with it).
        try:
            super().finish()
        except ConnectionError:
            pass


class _QuietHandler(_Handler):
    """No access log line per request; errors are still logged."""

    def log_request(self, code="-", size="-") -> None:
        pass


class Emulator:
    """The fake backend; its state (switches, conversations, request log) is open to tests."""

    def __init__(self, *, quiet: bool = True) -> None:
        self.secret = secrets.token_bytes(64)
        self.switches = Switches()
        self.requests: list[RecordedRequest] = []
        self.conversations = ConversationStore()
        self.sentinel = SentinelLedger()
        self.two_phase = TwoPhaseLedger()
        self.conduits = ConduitLedger()
        # Handed-off turns waiting for /f/conversation/resume, by conversation id.
        self.handoffs: dict = {}
        # Every file: the uploads and the images the model drew (files.py).
        self.files = FileStore()
        # The image tool's knobs and captions (images.py); it keeps its images in self.files.
        self.images = ImageTool(self.files)
        # The login pages (docs/protocol-auth.md): accounts, sessions, refresh tokens, auth
        # switches.
        self.auth = AuthPages(mint=self.mint_access_token)
        self.app = create_emulator_app(self)
        self.url = ""
        self._quiet = quiet
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failures_served = 0
        self._streams_started = 0
        # Streams whose client (the service) closed the connection before their end.
        self.streams_left = 0

    def start(self, port: int = 0) -> Emulator:
        """Serve on 127.0.0.1:`port` (0 = a free one) from a daemon thread."""
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
        if self._server is not None:
            self._server.shutdown()
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
