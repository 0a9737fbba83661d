"""Outbound HTTP: the curl_cffi session factory and the one place where curl errors become ours.

Every upstream call of the service goes through a session made by `new_session()`, so that TLS
impersonation, the outbound proxy, the trusted CAs (CHATGPT_CA_FILE) and DNS pinning (see
upstream/endpoints.py) are never forgotten.
The conversation answer is read with `stream_post()`, which takes all its settings from such a
session but reads the body in the calling thread (see StreamedResponse why).

Curl handles are reused (HandlePool): each thread keeps the Transfers (curl_transfer.py: an easy
handle and its multi handle) its finished sessions gave back, so the next answer on that thread
rides the same kept-alive connection (on the real site: no new TLS handshake per answer) and skips
making handles. A session and the answer it streams share one Transfer, so an answer's requests
use one connection and an open stream holds one handle. A Transfer is lent to one session at a
time; every request sets all of its own options again (URL, method, body, the whole header list,
timeout; curl's cookie list is cleared before the session's own cookies are added), so nothing
of one account's request reaches the next. Transfers are pooled per CURLOPT_RESOLVE pinning, so a
pin made for one upstream never answers another request's name lookup.

StreamedResponse and the lean request path rely on curl_cffi internals (`set_curl_options` and
its neighbours, Session attributes, private Curl methods, the raw curl_* binding). They are
probed once, at import (`probe_multi_handle_reader`); if any is missing, a warning is logged,
/readyz shows `"stream_reader": "public-fallback"`, every request is curl_cffi's own, and answers
are read with `PublicStreamReader`, over curl_cffi's public `session.post(..., stream=True)`:
more CPU per answer, the same behaviour.
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence

import curl_cffi
from curl_cffi import Curl, CurlECode, CurlInfo, CurlOpt, ffi, lib
from curl_cffi import requests as curl_requests
from curl_cffi.requests import exceptions as curl_errors
from curl_cffi.requests.cookies import Cookies

from . import curl_transfer, stream_pump
from .config import Config
from .curl_transfer import Transfer, lean_request_allowed
from .errors import UpstreamError, UpstreamTimeout

Session = curl_requests.Session
Response = curl_requests.Response
log = logging.getLogger(__name__)


# Idle handles a thread keeps per pool (the upstream Transfers here): its usual upstream and one
# other. Each keeps a connection (on the real site with its TLS state) while the thread waits, so
# a worker's hundreds of threads must not keep many.
MAX_IDLE_PER_THREAD = 2


class HandlePool(threading.local):
    """The idle curl handles of this thread, by pinning (CURLOPT_RESOLVE entries), newest last.

    `take()` lends a handle for the caller's sole use; `give_back()` keeps it for the next
    caller on this thread, or closes it when given back on another thread (the pool of each
    thread is only ever touched by that thread, so no lock) or when the thread keeps enough.
    A handle keeps its live connections, DNS cache and TLS session cache between loans.
    """

    def __init__(self, make, close):
        self._make, self._close = make, close
        self._idle: list[tuple[tuple[str, ...], object]] = []
        self._thread = threading.get_ident()

    def take(self, pinning: tuple[str, ...]):
        for index in range(len(self._idle) - 1, -1, -1):
            if self._idle[index][0] == pinning:
                return self._idle.pop(index)[1]
        return self._make()

    def forget(self) -> None:
        """Drop the idle handles without closing them: in a forked child, their connections
        are the parent's too (closing one would end the parent's TLS session on it)."""
        self._idle = []

    def give_back(self, pinning: tuple[str, ...], handle, thread: int) -> None:
        if thread != self._thread:  # lent on another thread: its pool is not ours to touch
            # ...unless that thread handed its stream to the pump and waits for it to end: it
            # takes the handle back then (stream_pump.run_in_origin).
            if not stream_pump.run_in_origin(
                    thread, lambda: self.give_back(pinning, handle, thread)):
                self._close(handle)
            return
        self._idle.append((pinning, handle))
        while len(self._idle) > MAX_IDLE_PER_THREAD:
            self._close(self._idle.pop(0)[1])


class _PooledSession(Session):
    """A Session on a Transfer (curl handle + multi handle) lent by this thread's pool; closing
    it gives the Transfer back (with its kept-alive connection) instead of closing it.

    Its GET requests and JSON POSTs take the lean path (curl_transfer.py: the same request bytes,
    a fraction of the work); any other request is curl_cffi's own, on a reset handle. A
    StreamedResponse made from it runs on the same Transfer (one connection, one handle per
    answer), so while one is open the session's requests borrow another Transfer.
    """

    def __init__(self, pinning: tuple[str, ...], *, ca_directory: str | None = None,
                 **settings):
        self._pinning = pinning
        # CHATGPT_CA_DIR: the CAs the lean path verifies with (curl_transfer.verify_by_directory)
        self.ca_directory = ca_directory
        self._lender = threading.get_ident()
        self._transfer: Transfer = _HANDLES.take(pinning)
        self._streaming = False  # a StreamedResponse is using self._transfer
        super().__init__(curl=self._transfer.curl, use_thread_local_curl=False, **settings)

    def request(self, method: str, url: str, **options):
        method = method.upper()
        lean = LEAN and not self._closed and lean_request_allowed(self, method, options)
        transfer = _HANDLES.take(self._pinning) if self._streaming else self._transfer
        try:
            if lean:
                return transfer.request(self, method, url, json=options.get("json"),
                                        headers=options.get("headers"),
                                        timeout=options.get("timeout", self.timeout))
            # curl_cffi sets every option of a reset handle, and resets it afterwards.
            transfer.reset()
            own, self._curl = self._curl, transfer.curl
            try:
                return super().request(method, url, **options)
            finally:
                self._curl = own
        finally:
            if transfer is not self._transfer:
                _HANDLES.give_back(self._pinning, transfer, threading.get_ident())

    def multiplexes(self) -> bool:
        """Whether the last answer on this session's handle came over HTTP/2 or /3 (its
        connection, kept in the handle's cache, carries several requests at once)."""
        return self._transfer.http_version.value >= curl_transfer.MULTIPLEXED_SINCE

    def post_beside(self, url: str, *, json: object, headers: dict,
                    timeout: float) -> PendingResponse:
        """Start a JSON POST that runs while this session's next requests do; its
        `response()` waits for its end. Its easy handle joins the session's multi handle
        (curl_transfer.py): over HTTP/2 it is one more stream on the same connection, over
        HTTP/1.1 a second connection. A request that does not take the lean path, or one on a
        session whose Transfer is streaming, is made at once instead, before returning."""
        options = {"json": json, "headers": headers, "timeout": timeout}
        if (not LEAN or self._closed or self._streaming
                or not lean_request_allowed(self, "POST", options)):
            return PendingResponse(self, None, self.post(url, **options))
        guest = _HANDLES.take(self._pinning)
        chunks: list[bytes] = []
        try:
            guest.start(self, "POST", url, json=json, headers=headers, timeout=timeout,
                        sink=chunks.append, beside=self._transfer)
            self._transfer.step()  # the request leaves now (or its connection starts to open)
        except BaseException:
            guest.end()
            _HANDLES.give_back(self._pinning, guest, threading.get_ident())
            raise
        return PendingResponse(self, guest, None, chunks)

    def _lend_for_stream(self) -> Transfer | None:
        """The session's Transfer for a stream, if it is free."""
        if self._streaming or self._closed:
            return None
        self._streaming = True
        return self._transfer

    def _stream_ended(self) -> None:
        self._streaming = False
        if self._closed:
            _HANDLES.give_back(self._pinning, self._transfer, self._lender)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # A stream still open on the Transfer gives it back when it ends.
        if not self._streaming:
            _HANDLES.give_back(self._pinning, self._transfer, self._lender)


class PendingResponse:
    """A request started by `_PooledSession.post_beside()`; `response()` is its answer, as
    session.post() would have answered it (raising what session.post() would raise), and
    `close()` (idempotent) stops it if it is still running and gives its handle back."""

    def __init__(self, session: _PooledSession, guest: Transfer | None,
                 answered: Response | None, chunks: list[bytes] | None = None):
        self._session, self._guest, self._answered = session, guest, answered
        self._chunks = chunks
        self._thread = threading.get_ident()

    def response(self) -> Response:
        if self._answered is not None:
            return self._answered
        guest = self._guest
        if guest is None:
            raise RuntimeError("the pending request was closed")
        try:
            guest.finish_beside()
            error = guest.failure()
            if error is not None:
                raise error
            answered = guest.response(self._session)
            answered.content = b"".join(self._chunks)
        finally:
            self.close()
        self._answered = answered
        return answered

    def close(self) -> None:
        guest, self._guest = self._guest, None
        if guest is not None:
            # Closed, not kept for the thread's next answer: while the answer streams, a kept
            # handle would hold its buffers (about 40 KB; 20 MB at 500 answers at once,
            # bench/concurrency.py). Its connection stays in the host's cache.
            guest.close()

    def __enter__(self) -> PendingResponse:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _pinning(curl_options: dict | None) -> tuple[str, ...]:
    return tuple((curl_options or {}).get(CurlOpt.RESOLVE, ()))


# The smallest upload buffer curl accepts (CURLOPT_UPLOAD_BUFFERSIZE); its default is 64 KiB.
UPLOAD_BUFFER_BYTES = 16 * 1024


def new_session(config: Config, *, resolve: Sequence[str] = ()) -> Session:
    """A curl_cffi session impersonating the configured browser, through the configured proxy.

    `resolve` holds curl RESOLVE entries ("host:port:address") that pin a host to the addresses
    the SSRF guard checked, so that DNS cannot be changed between the check and the connection.
    Its curl handle comes from this thread's pool and goes back to it on `close()`.
    """
    # curl keeps a 64 KiB upload buffer per handle once it has sent a body; the service's bodies
    # are small JSON, and with two handles held per open stream the smallest buffer curl allows
    # saves ~23 KB of resident memory per handle (bench/concurrency.py, README "Memory").
    curl_options = {CurlOpt.UPLOAD_BUFFERSIZE: UPLOAD_BUFFER_BYTES}
    if resolve:
        curl_options[CurlOpt.RESOLVE] = list(resolve)
    return _PooledSession(
        tuple(resolve),
        impersonate=config.impersonate,
        proxy=config.proxy,
        curl_options=curl_options,
        allow_redirects=False,
        # The environment's http_proxy must not silently override CHATGPT_PROXY.
        trust_env=False,
        # CHATGPT_CA_FILE: curl's CAINFO, on the lean path too (curl_transfer.set_up passes
        # the session's `verify` as session.post() does). Without it, CHATGPT_CA_DIR.
        verify=config.ca_file or True,
        ca_directory=config.site_ca_directory,
    )


def plain_session(resolve: Sequence[str] = (), *, total_timeout: float | None = None) -> Session:
    """A plain curl_cffi session (no impersonation, no CHATGPT_PROXY) for the operator's own
    endpoints (the alert webhook), pinned to the addresses in `resolve` as new_session is.

    `total_timeout` bounds each transfer, body included, in seconds: curl_cffi bounds a
    `stream=True` transfer only by a low-speed check, which lets a stalled body run on for
    several seconds past its `timeout`.
    """
    curl_options: dict = {CurlOpt.RESOLVE: list(resolve)} if resolve else {}
    if total_timeout is not None:
        curl_options[CurlOpt.TIMEOUT_MS] = max(1, int(total_timeout * 1000))
    return _PooledSession(tuple(resolve), curl_options=curl_options or None,
                          allow_redirects=False, trust_env=False)


class StreamedResponse:
    """A response whose body is read, chunk by chunk, by the thread that iterates it.

    `session.post(..., stream=True)` runs the transfer on a pool thread and hands every chunk to
    the reader through a queue: two thread wake-ups and GIL hand-overs per chunk, which at a few
    hundred concurrent answers doubled the CPU spent per answer. Here the request runs on a
    Transfer (curl_transfer.py: the session's own, so the answer's earlier requests and the
    stream share one handle and one connection; another one lent by the thread's pool when the
    session's is busy) whose multi handle is driven by the reader itself: curl_multi_poll() waits
    for the socket with the GIL released, curl_multi_perform() moves the transfer on, and the
    chunks it delivered to the write callback are yielded.

    `status_code` and `headers` are known when the object is returned (before the body is read),
    as with a curl_cffi stream. Always `close()` it (or use it as a context manager): that removes
    the transfer, which closes its connection if the body was not read to the end, and gives the
    handle back.
    """

    def __init__(self, session: Session, url: str, *, json: object, headers: dict,
                 timeout: float):
        lent = session._lend_for_stream() if isinstance(session, _PooledSession) else None
        self._session = session if lent is not None else None
        self._pinning = _pinning(session.curl_options)
        self._lender = threading.get_ident()
        self._transfer: Transfer = lent or _HANDLES.take(self._pinning)
        self._curl: Curl | None = self._transfer.curl
        self._running = self._transfer.running
        self._chunks: list[bytes] = []
        # A failure found while chunks received before it are still unread; raised after them,
        # as curl_cffi queues the exception behind the chunks.
        self._error: Exception | None = None
        try:
            # The same request bytes as session.post(url, json=..., headers=..., timeout=...),
            # impersonation, proxy, CURLOPT_RESOLVE, CA settings and cookies included. One
            # deliberate difference from curl_cffi's streams: `timeout` is curl's total
            # CURLOPT_TIMEOUT_MS (the answer must be complete by then) instead of the low-speed
            # limit curl_cffi uses for streams read on another thread.
            self._transfer.start(session, "POST", url, json=json, headers=headers,
                                 timeout=timeout, sink=self._chunks.append)
            # The headers are complete once the first body byte arrives (or the transfer ends),
            # which is also when curl_cffi's own streams return from session.post().
            self._transfer.step()
            while not self._chunks and self._running[0]:
                self._transfer.wait()
                self._transfer.step()
            if not self._running[0]:
                self._error = self._transfer.failure()
            if self._error is not None and not self._chunks:
                raise self._error
            # Status, headers, and Set-Cookie answers landing in the session's jar.
            self._meta = self._transfer.response(session)
        except BaseException:
            self.close()
            raise
        self.status_code: int = self._meta.status_code
        self.headers = self._meta.headers

    def iter_content(self) -> Iterator[bytes]:
        """Yield the body's chunks as they arrive; raise curl_cffi's exception if it breaks."""
        # The loop runs at every event of a stream: its helpers are bound once, out of it.
        chunks, transfer, running = self._chunks, self._transfer, self._running
        while self._curl is not None:
            # What one wait brought arrived together: one piece (curl calls its write callback
            # once per HTTP chunk, and the site sends one per event).
            if chunks:
                piece = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                yield piece
            if self._error is not None:
                raise self._error
            if not running[0]:
                return
            # Wait for the socket (or a curl timer), then move the transfer on. Between two
            # events the transfer has nothing to do until the socket is readable: waiting first
            # saves a curl_multi_perform that would find nothing, at every event of hundreds of
            # streams.
            transfer.wait()
            transfer.step()
            if not running[0]:
                self._error = transfer.failure()

    def finish(self, within: float) -> None:
        """Read the rest of the body, discarding it, if it ends within `within` seconds.

        A stream's last event ([DONE]) comes just before the end of its body, which is often a
        write of its own (chunked encoding's last chunk): the reader stops at the event, and
        curl keeps a connection for the next request only once its transfer is read to the end.
        A body that goes on longer is left as it is (close() then closes its connection).
        """
        transfer, running = self._transfer, self._running
        ends_by = time.monotonic() + within
        while self._curl is not None and running[0] and self._error is None:
            transfer.step()
            self._chunks.clear()
            if not running[0]:
                self._error = transfer.failure()
                return
            left_ms = int((ends_by - time.monotonic()) * 1000)
            if left_ms <= 0:
                return
            transfer.wait(left_ms)

    @property
    def closed(self) -> bool:
        return self._curl is None

    def close(self) -> None:
        """Stop the transfer if still running and give the handle back (idempotent).

        Removing an unfinished transfer closes its connection; a finished one's stays in the
        multi handle's cache for the next request. The next request sets every option of its own
        (curl_transfer.py), so nothing of this one reaches it."""
        if self._curl is None:
            return
        self._curl = None
        self._transfer.end()
        self._chunks.clear()
        if self._session is not None:
            self._session._stream_ended()
        else:
            _HANDLES.give_back(self._pinning, self._transfer, self._lender)

    def __enter__(self) -> StreamedResponse:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


_HANDLES = HandlePool(Transfer, Transfer.close)


def _forget_inherited_handles() -> None:
    # Runs in the child's only thread, whose pool is the forking thread's (gunicorn forks
    # workers from a master that may have made upstream requests, e.g. with preload_app).
    _HANDLES.forget()


os.register_at_fork(after_in_child=_forget_inherited_handles)


class PublicStreamReader:
    """The same interface as StreamedResponse over curl_cffi's public streaming API.

    curl_cffi runs the transfer on its own thread and queues the chunks; `timeout` becomes its
    limit on a stalled transfer rather than a total (the caller's deadline still applies per
    chunk, see upstream/conversation.py).
    """

    def __init__(self, session: Session, url: str, *, json: object, headers: dict,
                 timeout: float):
        self._response = session.post(url, json=json, headers=headers, timeout=timeout,
                                      stream=True)
        self.status_code: int = self._response.status_code
        self.headers = self._response.headers
        self.closed = False

    def iter_content(self) -> Iterator[bytes]:
        """Yield the body's chunks as they arrive; raise curl_cffi's exception if it breaks."""
        if not self.closed:
            yield from self._response.iter_content()

    def finish(self, within: float) -> None:
        """Nothing: curl_cffi's own stream closes its connection unless read to the end."""

    def close(self) -> None:
        """Stop the transfer if still running (idempotent), without waiting for it.

        curl_cffi ends a stream from its write callback, that is when the next chunk arrives or
        the transfer times out; waiting for that here would hold the caller's thread.
        """
        if not self.closed:
            self.closed = True
            threading.Thread(target=self._response.close, name="stream-close",
                             daemon=True).start()

    def __enter__(self) -> PublicStreamReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# Everything StreamedResponse and the lean request path (curl_transfer.py) take from curl_cffi
# beyond its public API.
_SET_CURL_OPTIONS_KEYWORDS = (
    "params_list", "base_url", "json", "headers_list", "cookies_list", "auth", "timeout",
    "allow_redirects", "max_redirects", "proxies_list", "proxy_auth", "trust_env", "verify_list",
    "accept_encoding", "content_callback", "impersonate", "ja3", "akamai", "perk", "extra_fp",
    "default_headers", "http_version", "interface", "dns", "doh_url", "cert", "curl_options",
    "stream",
)
_SESSION_ATTRIBUTES = (
    "params", "base_url", "headers", "cookies", "auth", "allow_redirects", "max_redirects",
    "proxies", "proxy_auth", "trust_env", "verify", "impersonate", "ja3", "akamai", "perk",
    "extra_fp", "default_headers", "http_version", "interface", "dns", "doh_url", "cert",
    "curl_options", "timeout", "retry", "cache_backend", "raise_for_status", "discard_cookies",
)
_CURL_METHODS = ("_ensure_cacert", "_get_error", "clean_handles_and_buffers", "reset",
                 "get_reason_phrase", "getinfo")
_MULTI_FUNCTIONS = ("curl_multi_init", "curl_multi_add_handle", "curl_multi_perform",
                    "curl_multi_poll", "curl_multi_info_read", "curl_multi_remove_handle",
                    "curl_multi_cleanup", "curl_multi_strerror", "_curl_easy_setopt",
                    "curl_easy_getinfo")
_COOKIES_METHODS = ("get_cookies_for_curl", "update_cookies_from_curl_changes")


def probe_multi_handle_reader(session_class=Session, curl_class=Curl, set_options=None,
                              binding=lib) -> list[str]:
    """What StreamedResponse and the lean path need and this curl_cffi lacks (empty: they can
    be used)."""
    set_options = curl_transfer.set_curl_options if set_options is None else set_options
    if set_options is None:  # curl_transfer could not import it, or one of its neighbours
        return ["curl_cffi.requests.utils.set_curl_options"]
    missing = []
    keywords = inspect.signature(set_options).parameters
    missing += [f"set_curl_options({name}=)" for name in _SET_CURL_OPTIONS_KEYWORDS
                if name not in keywords]
    try:
        session = session_class()
    except Exception as error:  # noqa: BLE001 - any failure means the probe cannot vouch for it
        return [f"Session() ({type(error).__name__})"]
    try:
        missing += [f"Session.{name}" for name in _SESSION_ATTRIBUTES
                    if not hasattr(session, name)]
    finally:
        with contextlib.suppress(Exception):
            session.close()
    missing += [f"Curl.{name}" for name in _CURL_METHODS if not hasattr(curl_class, name)]
    missing += [f"lib.{name}" for name in _MULTI_FUNCTIONS if not hasattr(binding, name)]
    missing += [f"Cookies.{name}" for name in _COOKIES_METHODS if not hasattr(Cookies, name)]
    if not hasattr(CurlInfo, "COOKIECHANGES"):
        missing.append("CurlInfo.COOKIECHANGES")
    try:
        ffi.typeof("struct curl_slist")
    except ffi.error:
        missing.append("ffi struct curl_slist")
    return missing


def _choose_reader() -> tuple[type, str, list[str]]:
    missing = probe_multi_handle_reader()
    if not missing:
        return StreamedResponse, "multi-handle", []
    log.warning("curl_cffi %s lacks what the multi-handle stream reader needs (%s): answers "
                "are read with curl_cffi's public streaming API instead, at some CPU cost",
                curl_cffi.__version__, ", ".join(missing))
    return PublicStreamReader, "public-fallback", missing


# Chosen once, at import; /readyz reports STREAM_READER and what was missing.
READER, STREAM_READER, READER_MISSING = _choose_reader()
# Whether _PooledSession's requests take the lean path (curl_transfer.py): with the same probe.
LEAN = READER is StreamedResponse


def stream_post(session: Session, url: str, *, json: object, headers: dict,
                timeout: float) -> StreamedResponse | PublicStreamReader:
    """POST `json` to `url` with `session`'s settings; return once the response headers are in.

    The body is then read by iterating `iter_content()` in the calling thread. Errors are
    curl_cffi's own exceptions (as from session.post), for `upstream_errors()` to translate.
    """
    return READER(session, url, json=json, headers=headers, timeout=timeout)




@contextlib.contextmanager
def upstream_errors(step: str) -> Iterator[None]:
    """Translate curl_cffi exceptions raised inside the block into UpstreamError / UpstreamTimeout.

    `step` names what was being done ("sentinel", "conversation", "login: password", ...) so the
    caller learns where it failed; URLs are not included because they may carry secrets.
    """
    try:
        yield
    except curl_errors.Timeout as exc:
        raise UpstreamTimeout(f"{step}: the upstream did not answer in time") from exc
    except curl_errors.DNSError as exc:
        raise UpstreamError(f"{step}: the upstream host name could not be resolved",
                            "upstream_unreachable") from exc
    except curl_errors.ProxyError as exc:
        raise UpstreamError(f"{step}: the outbound proxy failed", "proxy_error") from exc
    except curl_errors.CertificateVerifyError as exc:
        raise UpstreamError(f"{step}: the upstream's TLS certificate could not be verified (a "
                            "private CA is trusted with CHATGPT_CA_FILE)",
                            "upstream_unreachable") from exc
    except curl_errors.ConnectionError as exc:
        if exc.code == CurlECode.WEIRD_SERVER_REPLY:  # connected, but it did not speak HTTP
            raise UpstreamError(f"{step}: the server's answer was not valid HTTP (a malformed "
                                "status line or header, such as Content-Length)",
                                "upstream_bad_answer") from exc
        raise UpstreamError(f"{step}: could not connect to the upstream",
                            "upstream_unreachable") from exc
    except curl_errors.RequestException as exc:
        # Mid-body failures (partial transfer, HTTP/2 stream reset) land here.
        raise UpstreamError(f"{step}: the upstream connection broke (curl error {exc.code})",
                            "upstream_stream_broken") from exc


def user_agent_for(impersonate: str) -> str:
    """The User-Agent curl_cffi sends for a desktop Chrome target (the PoW config must embed it):
    `chromeNNN` is Chrome NNN on Windows, `chromeNNN_macos` on macOS."""
    version = "".join(ch for ch in impersonate.split("_")[0] if ch.isdigit()) or "152"
    system = ("Macintosh; Intel Mac OS X 10_15_7" if impersonate.endswith("_macos")
              else "Windows NT 10.0; Win64; x64")
    return (f"Mozilla/5.0 ({system}) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Chrome/{version}.0.0.0 Safari/537.36")
