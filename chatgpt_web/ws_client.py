"""Outbound WebSocket connections, made as transport.py makes its HTTP sessions.

The site hands some long answers to a WebSocket (upstream/turn_topic.py). It is dialled with
curl_cffi's own WebSocket, so its TLS handshake is the impersonated browser's like every other
upstream request: the same CHATGPT_IMPERSONATE target, CHATGPT_PROXY and never the environment's
proxy, the CAs of CHATGPT_CA_FILE, curl RESOLVE pins when given. The handshake carries what a
browser's does for a WebSocket (the page's `Origin`, `Sec-Fetch-Mode: websocket`), not the
navigation headers curl-impersonate sends by default, and no Authorization header (a browser
cannot set one on a WebSocket: the URL the site hands out is the credential, so it is never
logged).

Nothing here blocks the stream pump (stream_pump.py): messages are assembled from curl's frames
as they come (`recv_fragment`), and when curl has none the reader waits for the socket through
`stream_pump.wait_fds`; the handshake, one blocking libcurl call, runs on a short-lived thread
while the caller waits on a pipe the same way. Everything is bounded: the size of one message,
silence (a ping after PING_SECONDS without a frame, a failure after IDLE_SECONDS), the caller's
deadline.

curl's WebSocket errors become ours here (`websocket_errors`), as transport.upstream_errors
translates its HTTP ones.
"""
from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from curl_cffi import CurlECode, CurlError, CurlInfo, CurlOpt, CurlWsFlag
from curl_cffi.requests import WebSocket

from . import stream_pump
from .config import Config
from .curl_transfer import DirectoryTrustingCurl
from .errors import UpstreamError, UpstreamTimeout
from .transport import upstream_errors, user_agent_for

# A browser pings an idle WebSocket; the site's peers ping every 25 s and give up on a connection
# silent for 120 s. Any frame counts, pongs too: a turn may think for minutes without an item on a
# live connection (then the answer's deadline bounds it), while a dead one answers no ping.
PING_SECONDS = 25.0
IDLE_SECONDS = 120.0
HANDSHAKE_SECONDS = 15.0
_DATA = CurlWsFlag.TEXT | CurlWsFlag.BINARY | CurlWsFlag.CONT


@contextlib.contextmanager
def websocket_errors(step: str) -> Iterator[None]:
    """curl_cffi's WebSocket exceptions raised in the block as UpstreamError / UpstreamTimeout
    (those it shares with HTTP requests through transport.upstream_errors)."""
    with upstream_errors(step):
        try:
            yield
        except CurlError as exc:
            if exc.code in (CurlECode.OPERATION_TIMEDOUT,):
                raise UpstreamTimeout(f"{step}: the upstream did not answer in time") from exc
            if exc.code == CurlECode.HTTP_RETURNED_ERROR:  # an HTTP answer instead of 101
                raise UpstreamError(f"{step}: the upstream refused the WebSocket",
                                    "upstream_unreachable") from exc
            if exc.code in (CurlECode.COULDNT_CONNECT, CurlECode.COULDNT_RESOLVE_HOST):
                raise UpstreamError(f"{step}: could not connect to the upstream's WebSocket",
                                    "upstream_unreachable") from exc
            raise UpstreamError(f"{step}: the WebSocket broke (curl error {exc.code})",
                                "upstream_stream_broken") from exc


@dataclass(frozen=True)
class Dialer:
    """How to reach the upstream's WebSockets: the settings new_session() gives HTTP sessions."""

    impersonate: str
    proxy: str | None = None
    ca_file: str | None = None  # CHATGPT_CA_FILE: the CAs trusted besides the system's
    ca_dir: str | None = None  # CHATGPT_CA_DIR, without a CA file: the public CAs by hash

    @classmethod
    def from_config(cls, config: Config) -> Dialer:
        return cls(config.impersonate, config.proxy, config.ca_file, config.site_ca_directory)

    def open(self, url: str, *, origin: str, cookies=None, resolve: Sequence[str] = (),
             timeout: float, max_message_bytes: int) -> WebSocketConnection:
        """A connected WebSocket to `url` (ws:// or wss://), its handshake done within
        `timeout` seconds.

        :raise UpstreamError: refused or unreachable; UpstreamTimeout: the handshake took too long.
        """
        headers = {
            "User-Agent": user_agent_for(self.impersonate),
            "Accept-Language": "en-US,en;q=0.9",
            "Cache-Control": "no-cache",
            "Pragma": "no-cache",
            "Origin": origin,
            "Sec-Fetch-Dest": "websocket",
            "Sec-Fetch-Mode": "websocket",
            "Sec-Fetch-Site": "same-site",
        }
        curl_options: dict = {}
        if resolve:
            curl_options[CurlOpt.RESOLVE] = list(resolve)
        if not self.proxy:  # never the environment's proxy, as new_session's trust_env=False
            curl_options[CurlOpt.PROXY] = ""
            curl_options[CurlOpt.NOPROXY] = ""
        # autoclose off: curl_cffi's would answer a close frame by closing the curl handle inside
        # recv_fragment(), before the frame it returned (libcurl's memory) has been read.
        # close() answers it instead, once the reader is done with the frame.
        own_curl = {"curl": DirectoryTrustingCurl(self.ca_dir)} if self.ca_dir else {}
        socket = WebSocket(**own_curl, max_message_size=max_message_bytes, autoclose=False)

        def handshake() -> None:
            socket.connect(url, headers=headers, cookies=cookies, timeout=timeout,
                           impersonate=self.impersonate, proxy=self.proxy or None,
                           default_headers=False, allow_redirects=False,
                           verify=self.ca_file or True,
                           curl_options=curl_options)

        with websocket_errors("conversation websocket"):
            _beside_the_pump(handshake, timeout, abandon=socket.terminate)
        return WebSocketConnection(socket, max_message_bytes)


class WebSocketConnection:
    """One open WebSocket: send text, read whole messages; `close()` (idempotent) ends it."""

    def __init__(self, socket: WebSocket, max_message_bytes: int):
        self._socket = socket
        self.max_message_bytes = max_message_bytes
        self._fd = int(socket.curl.getinfo(CurlInfo.ACTIVESOCKET))

    def send_text(self, text: str) -> None:
        with websocket_errors("conversation websocket"):
            self._socket.send(text.encode(), CurlWsFlag.TEXT, timeout=HANDSHAKE_SECONDS)

    def messages(self, deadline: float) -> Iterator[bytes]:
        """Each data message the server sends, whole, until it closes the connection.

        :raise UpstreamError: a message over `max_message_bytes` (upstream_bad_answer), a broken
            connection or nothing for IDLE_SECONDS (upstream_stream_broken); UpstreamTimeout:
            `deadline` (time.monotonic()) passed.
        """
        socket, limit = self._socket, self.max_message_bytes
        pieces: list[bytes] = []
        size = 0
        heard = pinged = time.monotonic()
        while True:
            with websocket_errors("conversation websocket"):
                try:
                    chunk, frame = socket.recv_fragment()
                except CurlError as exc:
                    if exc.code != CurlECode.AGAIN:
                        raise
                    chunk, frame = None, None
                if frame is None:  # nothing buffered: wait for the socket (or ping, or give up)
                    now = time.monotonic()
                    if now >= deadline:
                        raise UpstreamTimeout("the answer did not complete within the timeout")
                    if now - heard >= IDLE_SECONDS:  # the connection, not the answer, failed
                        raise UpstreamError(f"the conversation WebSocket sent nothing for "
                                            f"{IDLE_SECONDS:g} s", "upstream_stream_broken")
                    if now - max(heard, pinged) >= PING_SECONDS:
                        socket.ping(timeout=HANDSHAKE_SECONDS)
                        pinged = now
                    wake = min(deadline, heard + IDLE_SECONDS, max(heard, pinged) + PING_SECONDS)
                    stream_pump.wait_fds(((self._fd, stream_pump.READ),), max(0.0, wake - now))
                    continue
                flags = frame.flags
                bytes_left = frame.bytesleft
            heard = time.monotonic()
            if flags & CurlWsFlag.CLOSE:
                return
            if not flags & _DATA:
                continue  # a ping or pong (curl answers pings itself)
            size += len(chunk)
            if size > limit:
                raise UpstreamError(f"the upstream sent a WebSocket message longer than {limit} "
                                    "bytes", "upstream_bad_answer")
            pieces.append(chunk)
            if bytes_left == 0 and not flags & CurlWsFlag.CONT:
                yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
                pieces, size = [], 0

    def close(self) -> None:
        """Send a close frame if the socket takes it at once, and end the connection."""
        socket = self._socket
        if not socket.closed:
            with contextlib.suppress(CurlError):
                socket.close(timeout=0)
            socket.terminate()

    def __enter__(self) -> WebSocketConnection:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _beside_the_pump(work, timeout: float, *, abandon) -> None:
    """Run the blocking `work()` (bounded by `timeout` itself); in the stream pump, on a thread
    of its own while this greenlet waits, so that the pump's other streams go on.

    :raise UpstreamTimeout: it did not end within `timeout` and a grace second (it is then left
        to end on its own, and `abandon()` is called once it has).
    """
    if stream_pump.current() is None:
        work()
        return
    readable, writable = os.pipe()
    outcome: dict = {}
    lock = threading.Lock()

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the waiting greenlet
            outcome["error"] = error
        with lock:
            if not outcome.get("abandoned"):
                os.write(writable, b".")
            else:
                abandon()
            os.close(writable)

    threading.Thread(target=run, name="websocket-handshake", daemon=True).start()
    try:
        stream_pump.wait_fds(((readable, stream_pump.READ),), timeout + 1.0)
        with lock:
            finished = bool(select.select([readable], [], [], 0)[0])
            outcome["abandoned"] = not finished
    finally:
        os.close(readable)
    if not finished:
        raise UpstreamTimeout("conversation websocket: the handshake did not end in time")
    if "error" in outcome:
        raise outcome["error"]
