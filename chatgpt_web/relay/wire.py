"""HTTP exchanges with relay upstreams: curl handles driven by the thread that reads them.

Every relay request and model discovery goes through `Exchange`. The response is read in the
calling thread: `wait_head()` returns once the status line and headers are in, and `read(timeout)`
returns whatever body bytes arrived, or None when none came within `timeout` (the caller then
sends a keep-alive comment or gives up), or b"" at the end. curl_multi_poll waits for the socket
with the GIL released, so a silent upstream costs no CPU.

A request runs on a link (a curl multi handle and its easy handle) lent by the process's pool of
idle links, the one given back last: finished transfers leave their connection in the multi
handle's cache, so the next request to the same upstream, on whichever thread, goes out on an
open connection without TCP and TLS handshakes. A link goes back with its easy handle reset
(curl_easy_reset: every option, header list, body and callback of its request gone), so nothing
of one request (its headers, the upstream or the caller's own key) reaches the next, which sets
all its options again.

Upstream base URLs come from the operator's UPSTREAMS_FILE and are trusted configuration: no
SSRF check applies to them (docs/relay.md). No browser impersonation: these are APIs.
"""
from __future__ import annotations

import os
import threading
import time

from curl_cffi import Curl, CurlOpt
from curl_cffi._wrapper import ffi, lib
from curl_cffi.requests.exceptions import RequestException

# _multi_perform: curl_multi_perform without letting go of the GIL (curl_transfer.py says why),
# used once the answer's head is in, where a perform only moves the few bytes of an event.
# wait_multi: curl_multi_poll, or in the stream pump a wait that lets its other streams run.
from ..curl_transfer import _multi_perform as _perform_holding_gil
from ..curl_transfer import set_trust, wait_multi

_CURLMSG_DONE = 1
# Idle links (multi + easy handle, with the upstream connection curl keeps open) one process
# keeps for the next requests, and for how long. A link with its connection costs some tens of
# kB; a burst of streams leaves up to this many connections open for the next one.
MAX_IDLE_LINKS = 256
LINK_IDLE_SECONDS = 60.0
# curl error codes (curl/curl.h) that mean "no answer in time" rather than a refused connection.
_TIMEOUT_CODES = {28}
_MAX_HEADER_BYTES = 64 * 1024


class TransportFailure(Exception):
    """The exchange failed below HTTP: `kind` is "connect", "timeout" or "broken"."""

    def __init__(self, kind: str, code: int):
        super().__init__(f"{kind} (curl error {code})")
        self.kind = kind
        self.code = code


class _Link:
    """A curl multi handle and the easy handle it drives: one upstream request at a time.

    curl keeps the connections of finished transfers in the multi handle's cache, so the next
    request on the same link to the same upstream (and proxy) goes out on the open connection,
    with no TCP or TLS handshake, and the upstream skips accepting a new connection.
    """

    def __init__(self) -> None:
        self.multi = lib.curl_multi_init()
        self.curl = Curl()
        self.idle_since = 0.0

    def close(self) -> None:
        """Close the easy handle, then the multi handle with the connections it keeps."""
        self.curl.close()
        if self.multi != ffi.NULL:
            lib.curl_multi_cleanup(self.multi)
            self.multi = ffi.NULL


class _IdleLinks:
    """The process's idle links, newest last, shared by every thread.

    A worker serves each request on whichever pool thread is free (threads also end when idle,
    buffered_worker.py), so links kept per thread rarely met the same upstream again: every
    relayed request opened a new connection. Here a request takes the link given back last, the
    one whose connection is most likely still open. At most MAX_IDLE_LINKS are kept, none longer
    than LINK_IDLE_SECONDS (an upstream closes an idle connection after a while anyway; curl
    notices a closed one and connects again).
    """

    def __init__(self) -> None:
        self._idle: list[_Link] = []
        self._lock = threading.Lock()

    def take(self) -> _Link:
        with self._lock:
            link = self._idle.pop() if self._idle else None
        return link if link is not None else _Link()

    def give_back(self, link: _Link) -> None:
        now = time.monotonic()
        link.idle_since = now
        with self._lock:
            self._idle.append(link)
            stale = 0
            while stale < len(self._idle) and (
                    len(self._idle) - stale > MAX_IDLE_LINKS
                    or now - self._idle[stale].idle_since > LINK_IDLE_SECONDS):
                stale += 1
            closing, self._idle[:stale] = self._idle[:stale], []
        for old in closing:
            old.close()

    def forget(self) -> None:
        """Drop the idle links without closing them: in a forked child their connections are
        the parent's too."""
        self._idle = []
        self._lock = threading.Lock()


_LINKS = _IdleLinks()
os.register_at_fork(after_in_child=_LINKS.forget)


class Exchange:
    """One request; always `close()` it (or use `with`): that ends the transfer if still running."""

    def __init__(self, method: str, url: str, *, body: bytes | None, headers: list[tuple[str, str]],
                 proxy: str | None, connect_timeout: float, total_timeout: float,
                 ca_directory: str | None = None):
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self._head_done = False
        self._header_bytes = 0
        self._chunks: list[bytes] = []
        self._done = False
        self._performed = False
        self._error: TransportFailure | None = None
        self._running = ffi.new("int *", 1)
        self._pending = ffi.new("int *")
        self._body = body  # curl reads POSTFIELDS from this buffer: it must outlive the transfer
        self._link = _LINKS.take()
        curl = self._curl = self._link.curl
        curl.setopt(CurlOpt.URL, url.encode())
        if method == "GET":
            curl.setopt(CurlOpt.HTTPGET, 1)
        else:
            curl.setopt(CurlOpt.POST, 1)
            curl.setopt(CurlOpt.POSTFIELDSIZE, len(body or b""))
            curl.setopt(CurlOpt.POSTFIELDS, body or b"")
        lines = [f"{name}: {value}".encode() for name, value in headers]
        curl.setopt(CurlOpt.HTTPHEADER, lines + [b"Expect:"])
        curl.setopt(CurlOpt.WRITEFUNCTION, self._on_body)
        curl.setopt(CurlOpt.HEADERFUNCTION, self._on_header)
        curl.setopt(CurlOpt.CONNECTTIMEOUT_MS, max(1, int(connect_timeout * 1000)))
        curl.setopt(CurlOpt.TIMEOUT_MS, max(1, int(total_timeout * 1000)))
        curl.setopt(CurlOpt.NOSIGNAL, 1)
        curl.setopt(CurlOpt.PROXY, (proxy or "").encode())
        set_trust(curl, ca_directory)  # CHATGPT_CA_DIR: not a bundle's store per link
        self._multi = self._link.multi
        self._perform_args = (int(ffi.cast("uintptr_t", self._multi)),
                              int(ffi.cast("uintptr_t", self._running)))
        self._added = lib.curl_multi_add_handle(self._multi, curl._curl) == 0
        if not self._added:
            self.close()
            raise TransportFailure("connect", -1)

    # --- curl callbacks -----------------------------------------------------------------------
    def _on_header(self, line: bytes) -> int:
        self._header_bytes += len(line)
        if self._header_bytes > _MAX_HEADER_BYTES:
            return 0  # curl aborts the transfer (CURLE_WRITE_ERROR)
        if line.startswith(b"HTTP/"):
            parts = line.split(None, 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            self.headers = {}
        elif line in (b"\r\n", b"\n"):
            if self.status is not None and self.status >= 200:
                self._head_done = True
        else:
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        return len(line)

    def _on_body(self, chunk: bytes) -> int:
        self._head_done = True
        self._chunks.append(chunk)
        return len(chunk)

    # --- driving ------------------------------------------------------------------------------
    def _step(self, wait: float) -> None:
        # Each step ends with a perform, so the next one waits first: a perform straight after
        # another finds nothing new (bytes that came meanwhile end the wait at once). Only the
        # first step starts the transfer without waiting.
        if self._performed:
            # curl_multi_poll; in the stream pump, a wait that lets the pump's other streams run
            # (each exchange has a multi handle of its own, its link's).
            try:
                wait_multi(self._multi, int(wait * 1000) + 1 if wait > 0 else 0)
            except RequestException as error:  # curl could not wait on the handle
                raise TransportFailure("broken", -1) from error
        self._performed = True
        if self._head_done:
            _perform_holding_gil(*self._perform_args)
        else:  # connecting: cffi's call lets other threads run meanwhile
            lib.curl_multi_perform(self._multi, self._running)
        self._finished()

    def _finished(self) -> bool:
        """Read curl's message for this transfer, if it ended; True when it has.

        A thread runs one exchange at a time (a request's attempts follow one another), so the
        multi handle's running count is this transfer's.
        """
        if self._running[0]:
            return False
        self._done = True
        while (message := lib.curl_multi_info_read(self._multi, self._pending)) != ffi.NULL:
            if message.msg == _CURLMSG_DONE and message.easy_handle == self._curl._curl:
                code = message.data.result
                if code != 0:
                    kind = ("timeout" if code in _TIMEOUT_CODES
                            else "broken" if self._head_done else "connect")
                    self._error = TransportFailure(kind, code)
        return True

    def wait_head(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the status and headers; True once they are in.

        :raise TransportFailure: the transfer failed before its headers.
        """
        end = time.monotonic() + timeout
        while not self._head_done:
            if self._done:
                if self._error is not None:
                    raise self._error
                return self.status is not None
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            self._step(min(remaining, 1.0))
        return True

    def read(self, timeout: float) -> bytes | None:
        """Body bytes that arrived (joined), None if none within `timeout`, b"" at the end.

        :raise TransportFailure: the transfer broke (after the bytes received before it).
        """
        end = time.monotonic() + timeout
        while not self._chunks:
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            remaining = end - time.monotonic()
            if remaining <= 0:
                return None
            self._step(remaining)
        chunks, self._chunks = self._chunks, []
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read_all(self, limit: int, timeout: float) -> bytes:
        """The whole body (at most `limit` bytes: more is a "broken" failure) within `timeout`."""
        end = time.monotonic() + timeout
        parts, size = [], 0
        while True:
            chunk = self.read(max(0.0, end - time.monotonic()))
            if chunk is None:
                raise TransportFailure("timeout", 28)
            if not chunk:
                return b"".join(parts)
            size += len(chunk)
            if size > limit:
                raise TransportFailure("broken", 0)
            parts.append(chunk)

    def close(self) -> None:
        """End the transfer if still running and give the handle back, reset (idempotent)."""
        if self._curl is None:
            return
        curl, self._curl = self._curl, None
        if self._added:
            lib.curl_multi_remove_handle(self._multi, curl._curl)
            self._added = False
        # Free this request's header list and callbacks, then reset every option, so that the
        # next loan starts from a blank handle (setopt(HTTPHEADER) appends to a kept list).
        curl.clean_handles_and_buffers()
        curl.reset()
        _LINKS.give_back(self._link)
        self._chunks = []

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
