"""One curl handle, driven by its own multi handle, for every request of an answer.

A curl_cffi `session.post()` sets every option of its handle again (about twenty setopt calls,
the browser impersonation, ~20 `curl_slist_append` calls for the headers, the cookie jar), runs
it, reads sixteen `getinfo` values and resets the handle. Under a few hundred threads each of
those C calls releases the GIL, a chance for a thread switch, and the Python around them was most
of the CPU an answer spends before its first word (bench/cpu_ab.py). A `Transfer` instead keeps
the per-session settings (impersonation, proxy, CA, CURLOPT_RESOLVE pinning, redirects, the
session's curl options) on its handle between requests: they are set, by curl_cffi's own
`set_curl_options`, when the handle meets settings it does not carry yet. A request then sets
only what is its own: method and body, URL, header lines, the cookies of the session's jar and
the timeout; it reads the status, the header lines and (when the answer set any) the cookie
changes.

The request bytes are curl_cffi's: the same header lines in the same order (`header_lines`), the
same JSON serialisation, URL quoting and cookie engine (tests/test_lean_requests.py compares the
bytes with `session.post()`'s). Nothing of a request outlives it: the next one sets the URL, the
method, the body, the whole header list, the timeout, and clears curl's cookie list before
adding its own session's cookies.

Short requests and the streamed answer run on the same easy handle through the same multi
handle, so they share its connection cache: an answer's requests ride one connection, and an
open stream holds one handle and one connection.

Two requests at once (`start(..., beside=host)`): a second Transfer's easy handle joins the
host's multi handle, so one wait and one `curl_multi_perform` move both, and both draw on the
host's connection cache: over HTTP/2 the second request is one more stream on the same
connection; over HTTP/1.1 curl opens a second connection, kept in that cache for the next answer.
Each request then knows it has ended by its own CURLMSG_DONE message (the host's running count
holds both).
"""
from __future__ import annotations

import ctypes
import http.cookies
import json
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from curl_cffi import Curl, CurlInfo, CurlOpt, ffi, lib
from curl_cffi import _wrapper as curl_binary
from curl_cffi.requests import Response
from curl_cffi.requests import exceptions as curl_errors
from curl_cffi.requests.cookies import Cookies
from curl_cffi.requests.headers import Headers

from . import stream_pump

try:  # what the lean path borrows from curl_cffi to stay byte-for-byte the same
    from curl_cffi.requests.models import Request
    from curl_cffi.requests.utils import (
        _is_native_impersonate_target,
        requote_uri,
        set_curl_options,
        update_header_line,
    )
except ImportError:  # a curl_cffi that moved them: transport's probe turns the lean path off
    set_curl_options = None

# curl_multi_poll() returns earlier when curl has a timer due (e.g. CURLOPT_TIMEOUT_MS), so this
# only bounds how long a wait can last when nothing at all happens.
POLL_MS = 1000
# Seconds a streamed body may take to end after its last event ([DONE]) for its connection to be
# kept for the next request: the end is read, not needed (the answer is complete), so a body that
# goes on longer is cut and its connection closed. Both readers of event streams use it: the web
# path (transport.StreamedResponse.finish) and the relay (relay/forward.py).
END_OF_BODY_WAIT = 1.0
_CURLMSG_DONE = 1  # CURLMSG_DONE in curl/multi.h
MULTIPLEXED_SINCE = 3  # CURL_HTTP_VERSION_2_0 in curl/curl.h: HTTP/2 and /3 multiplex
_LONG = {CurlOpt.POST, CurlOpt.HTTPGET, CurlOpt.POSTFIELDSIZE, CurlOpt.TIMEOUT_MS}
# The options start() sets for each request: a session whose curl_options set one of them (to
# override it, as curl_cffi lets them) takes curl_cffi's own path.
PER_REQUEST_OPTIONS = frozenset({*_LONG, CurlOpt.URL, CurlOpt.POSTFIELDS, CurlOpt.HTTPHEADER,
                                 CurlOpt.COOKIELIST})
# session.request's own default (curl_cffi's Session.request), which set_curl_options receives.
ACCEPT_ENCODING = "gzip, deflate, br"


def _holding_the_gil(name: str, *argtypes):
    """A ctypes caller of curl's `name` that keeps the GIL: cffi releases it around every call,
    and curl_multi_perform's write callback then takes it again, so a perform that only moves a
    few bytes made two GIL hand-overs (each a chance for a thread switch) at every event."""
    address = int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))
    return ctypes.PYFUNCTYPE(ctypes.c_int, *argtypes)(address)


# curl_multi_perform never waits (the multi interface is non-blocking, names are resolved by
# c-ares): it sends what it can, reads what the socket already holds and calls the header and
# write callbacks, which need the GIL anyway (through cffi, which lets go of it, each callback
# took it back: a hand-over per header line). Transfer.step() keeps the GIL; so a new kept-alive
# connection's TLS handshake computes with it held, once per connection and under a millisecond.
_multi_perform = _holding_the_gil("curl_multi_perform", ctypes.c_void_p, ctypes.c_void_p)
# What start(), response() and end() call for every request: each only stores or reads a value
# on the handle (no I/O: a removed unfinished transfer's socket is closed, which does not wait).
# Through cffi each was a GIL hand-over: a dozen per request, four requests before an answer's
# first word, and under a burst of answers every hand-over is a turn lost to the other threads.
_easy_setopt = _holding_the_gil("_curl_easy_setopt", ctypes.c_void_p, ctypes.c_int,
                                ctypes.c_void_p)
_easy_getinfo = _holding_the_gil("curl_easy_getinfo", ctypes.c_void_p, ctypes.c_int,
                                 ctypes.c_void_p)
_multi_add_handle = _holding_the_gil("curl_multi_add_handle", ctypes.c_void_p, ctypes.c_void_p)
_multi_remove_handle = _holding_the_gil("curl_multi_remove_handle", ctypes.c_void_p,
                                        ctypes.c_void_p)


class _CurlMsg(ctypes.Structure):
    """struct CURLMsg (curl/multi.h); `result` is the CURLcode member of its `data` union."""

    _fields_ = [("msg", ctypes.c_int), ("easy_handle", ctypes.c_void_p),
                ("result", ctypes.c_int)]


_multi_info_read = ctypes.PYFUNCTYPE(ctypes.POINTER(_CurlMsg), ctypes.c_void_p,
                                     ctypes.POINTER(ctypes.c_int))(
    int(ffi.cast("uintptr_t", ffi.addressof(lib, "curl_multi_info_read"))))


class _WaitFd(ctypes.Structure):
    """struct curl_waitfd (curl/multi.h)."""

    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


_CURL_WAIT_POLLIN, _CURL_WAIT_POLLOUT = 0x0001, 0x0004
MAX_WAIT_FDS = 8  # sockets one multi handle of ours waits on at once (one transfer: one or two)


def _find_multi_waitfds():
    """curl_multi_waitfds (curl >= 8.8), which curl_cffi's binding does not expose: the sockets
    and events curl_multi_poll would wait for, so that the stream pump can wait for them in its
    own selector, beside every other stream's. None if this libcurl lacks it."""
    try:
        function = ctypes.PyDLL(curl_binary.__file__).curl_multi_waitfds
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.POINTER(_WaitFd), ctypes.c_uint,
                         ctypes.POINTER(ctypes.c_uint)]
    function.restype = ctypes.c_int
    return function


_multi_waitfds = _find_multi_waitfds()


def pump_problems() -> list[str]:
    """What the stream pump needs from this libcurl and it lacks (empty: Transfers can wait in
    the pump)."""
    if _multi_waitfds is None:
        return ["curl_multi_waitfds"]
    if not hasattr(lib, "curl_multi_timeout"):
        return ["curl_multi_timeout"]
    multi = lib.curl_multi_init()
    try:
        fds, count = (_WaitFd * MAX_WAIT_FDS)(), ctypes.c_uint(0)
        code = _multi_waitfds(int(ffi.cast("uintptr_t", multi)), fds, MAX_WAIT_FDS,
                              ctypes.byref(count))
        return [] if code == 0 else [f"curl_multi_waitfds ({code})"]
    finally:
        lib.curl_multi_cleanup(multi)


# curl_multi_timeout, keeping the GIL as _multi_perform does (it only reads curl's timer list).
_multi_timeout = _holding_the_gil("curl_multi_timeout", ctypes.c_void_p,
                                  ctypes.POINTER(ctypes.c_long))


class MultiWait:
    """What a wait in the stream pump asks curl about one multi handle, in memory kept between
    waits: its sockets and their events (curl_multi_waitfds) and its next timer."""

    __slots__ = ("address", "fds", "count", "timeout")

    def __init__(self, multi) -> None:
        self.address = int(ffi.cast("uintptr_t", multi))
        self.fds = (_WaitFd * MAX_WAIT_FDS)()
        self.count = ctypes.c_uint(0)
        self.timeout = ctypes.c_long(0)

    def wait(self, pump, longest_ms: int) -> None:
        """Park the calling greenlet until curl has something to do: one of its sockets is
        ready, or its next timer is due (at most `longest_ms`)."""
        _check_multi(_multi_timeout(self.address, ctypes.byref(self.timeout)))
        due = self.timeout.value
        wait_ms = longest_ms if due < 0 else min(due, longest_ms)
        if wait_ms == 0:
            return
        _check_multi(_multi_waitfds(self.address, self.fds, MAX_WAIT_FDS,
                                    ctypes.byref(self.count)))
        watched = []
        for index in range(min(self.count.value, MAX_WAIT_FDS)):
            wanted = self.fds[index].events
            events = ((stream_pump.READ if wanted & _CURL_WAIT_POLLIN else 0)
                      | (stream_pump.WRITE if wanted & _CURL_WAIT_POLLOUT else 0))
            if events:
                watched.append((self.fds[index].fd, events))
        pump.wait(watched, wait_ms / 1000)


def wait_multi(multi, longest_ms: int) -> None:
    """Wait, for at most `longest_ms`, until curl has something to do on `multi` (a cffi
    CURLM*): a socket is ready, or one of its timers is due. curl_multi_poll in a thread of its
    own; in the stream pump, a wait in the pump's epoll that lets the other streams run
    meanwhile (stream_pump.py). The relay's readers (relay/wire.py) can wait through this too,
    once each of them has a multi handle of its own (the pump runs many on one thread)."""
    pump = stream_pump.current()
    if pump is None:
        _check_multi(lib.curl_multi_poll(multi, ffi.NULL, 0, longest_ms, ffi.NULL))
    else:
        MultiWait(multi).wait(pump, longest_ms)


class Transfer:
    """A curl easy handle, its multi handle, and the session settings the handle carries.

    Lent by transport's HandlePool to one session (or one stream) at a time. `start()` begins a
    request, `step()`/`wait()` move it on in the calling thread, `finish()` ends it.
    """

    def __init__(self) -> None:
        self.curl = Curl()
        self.multi = lib.curl_multi_init()
        self.settings: tuple | None = None  # what set_up() last set on the handle
        self.added = False
        self.running = ffi.new("int *", 0)
        self._multi_address = int(ffi.cast("uintptr_t", self.multi))
        # Beside another Transfer (start(beside=...)): that host, whose multi handle moves this
        # request; as a host: how many guests are in its multi handle, and the results of the
        # requests (its own and theirs) that ended while guests were in it, by easy handle.
        self._host: Transfer | None = None
        self._guests = 0
        self._ended: dict[int, int] = {}
        self._easy = int(ffi.cast("uintptr_t", self.curl._curl))  # kept by reset(), not close()
        self._perform_args = (self._multi_address, int(ffi.cast("uintptr_t", self.running)))
        self.header_lines: list[bytes] = []
        self.url = ""  # the URL of the current (or last) request, as curl was given it
        self._sink: Callable[[bytes], object] = _discard
        self._pending = ctypes.c_int(0)
        self._multi_wait: MultiWait | None = None  # made by the first wait in the stream pump
        self._status = ctypes.c_long(0)
        # CURLINFO_HTTP_VERSION of the last response (0: none yet); 3 and up: HTTP/2 or /3.
        self.http_version = ctypes.c_long(0)
        # What curl points into without copying: the last POST body and the header list.
        self._body = b""
        self._header_list: tuple = ()

    # -- the handle's settings -------------------------------------------------------------

    def set_up(self, session, url: str) -> None:
        """Put `session`'s settings for `url` on the handle, unless it carries them already."""
        settings = settings_of(session, url)
        if settings == self.settings:
            return
        self.reset()
        # Exactly what session.post() passes for these settings (Session._request_once), with
        # no header, cookie or body yet: start() sets those for each request.
        set_curl_options(
            self.curl, "GET", url,
            params_list=[None, None], base_url=None, json=None, headers_list=[None, None],
            cookies_list=[None, None], auth=session.auth, timeout=None,
            allow_redirects=session.allow_redirects, max_redirects=session.max_redirects,
            proxies_list=[session.proxies, None], proxy_auth=session.proxy_auth,
            trust_env=session.trust_env, verify_list=[session.verify, None],
            accept_encoding=ACCEPT_ENCODING, content_callback=self._on_body,
            impersonate=session.impersonate, ja3=session.ja3, akamai=session.akamai,
            perk=session.perk, extra_fp=session.extra_fp,
            default_headers=session.default_headers, http_version=session.http_version,
            interface=session.interface, dns=session.dns, doh_url=session.doh_url,
            cert=session.cert, curl_options=session.curl_options, stream=False,
        )
        self.curl.setopt(CurlOpt.HEADERFUNCTION, self._on_header)
        # Without it, every curl_multi_perform saves, sets and restores the SIGPIPE handler:
        # three system calls at each upstream event of a stream. Python already ignores SIGPIPE,
        # and curl sends with MSG_NOSIGNAL.
        self.curl.setopt(CurlOpt.NOSIGNAL, 1)
        set_trust(self.curl, getattr(session, "ca_directory", None)
                  if session.verify is not False else None)
        self.settings = settings

    def reset(self) -> None:
        """Back to a handle with no options (curl_cffi's own requests expect one)."""
        self.end()
        self.curl.clean_handles_and_buffers()
        self.curl.reset()
        self.settings = None

    # -- one request -----------------------------------------------------------------------

    def start(self, session, method: str, url: str, *, json: object, headers,
              timeout: float | None, sink: Callable[[bytes], object],
              beside: Transfer | None = None) -> None:
        """Set this request's own options and add it to the multi handle (nothing is sent yet).

        `json` is the body of a POST (None: no body); `sink` receives the body's chunks as they
        arrive, from inside step()/wait(). With `beside`, the request joins that Transfer's
        multi handle instead (see the module's docstring): it moves whenever that one steps,
        and `finish_beside()` waits for its end.
        """
        self.set_up(session, url)
        handle = self._easy
        body = b"" if json is None else json_body(json)
        lines = header_lines(session.headers, headers, json_body=json is not None)
        header_list = _slist(lines)
        address = request_url(url)
        self._header_list = header_list
        self.url = address.decode()
        _setopt(handle, CurlOpt.URL, address)
        if method == "POST":
            self._body = body  # curl reads the body from this memory, it does not copy it
            _setopt(handle, CurlOpt.POST, 1)
            _setopt(handle, CurlOpt.POSTFIELDS, body)
            _setopt(handle, CurlOpt.POSTFIELDSIZE, len(body))
        else:
            _setopt(handle, CurlOpt.HTTPGET, 1)
        _setopt(handle, CurlOpt.HTTPHEADER, int(ffi.cast("uintptr_t", header_list[0])))
        # curl's cookie list is cleared, then filled from this session's jar, as curl_cffi does.
        _setopt(handle, CurlOpt.COOKIELIST, b"ALL")
        if session.cookies:
            for morsel in session.cookies.get_cookies_for_curl(Request(self.url, None, method)):
                _setopt(handle, CurlOpt.COOKIELIST, morsel.to_curl_format().encode())
        _setopt(handle, CurlOpt.TIMEOUT_MS, int((timeout or 0) * 1000))
        self.header_lines = []
        self._sink = sink
        if beside is not None:
            _check_multi(_multi_add_handle(beside._multi_address, handle))
            self._host = beside
            beside._guests += 1
            self.added = True
            return
        _check_multi(_multi_add_handle(self._multi_address, handle))
        self.added = True
        self.running[0] = 1

    def step(self) -> None:
        """Let curl move the transfer on (sending, reading) without waiting or letting go of the
        GIL."""
        _check_multi(_multi_perform(*self._perform_args))

    def wait(self, longest_ms: int = POLL_MS) -> None:
        """Wait for the socket, or a curl timer, for at most `longest_ms` (in the stream pump,
        the other streams run meanwhile: wait_multi)."""
        pump = stream_pump.current()
        if pump is None:
            _check_multi(lib.curl_multi_poll(self.multi, ffi.NULL, 0, longest_ms, ffi.NULL))
            return
        if self._multi_wait is None:
            self._multi_wait = MultiWait(self.multi)
        self._multi_wait.wait(pump, longest_ms)

    def failure(self) -> Exception | None:
        """The curl_cffi exception session.post() would raise for the finished transfer, if any."""
        if self._shares_its_multi():
            code = (self._host or self)._collect_ended().pop(self._easy, 0)
            return self._error(code) if code != 0 else None
        while message := _multi_info_read(self._multi_address, ctypes.byref(self._pending)):
            if message.contents.msg == _CURLMSG_DONE and message.contents.result != 0:
                return self._error(message.contents.result)
        return None

    def _error(self, code: int) -> Exception:
        # Curl._get_error reads the handle's error buffer, as Curl.perform() does; the text
        # matters: code2error() recognises a failed proxy CONNECT by it.
        text = str(self.curl._get_error(code, "perform"))
        return curl_errors.code2error(code, text)(text, code)

    def _collect_ended(self) -> dict[int, int]:
        """(As a host.) The results of the requests in this multi handle that have ended, by
        easy handle, their messages read so far included."""
        while message := _multi_info_read(self._multi_address, ctypes.byref(self._pending)):
            if message.contents.msg == _CURLMSG_DONE:
                self._ended[message.contents.easy_handle] = message.contents.result
        return self._ended

    def _shares_its_multi(self) -> bool:
        """Whether its multi handle's messages may be about other requests too (a guest, a
        host with guests, or a host whose guest has left with messages read for both)."""
        return self._host is not None or bool(self._guests or self._ended)

    def _running(self) -> bool:
        """Whether this request has not ended yet."""
        if not self._shares_its_multi():
            return bool(self.running[0])  # alone in its multi handle: curl's count says it
        host = self._host or self
        return self._easy not in host._collect_ended()

    def finish_beside(self) -> None:
        """(A request started beside a host.) Move both on until this one has ended."""
        host = self._host
        host.step()
        while self._running():
            host.wait()
            host.step()

    def end(self) -> None:
        """Take the request out of the multi handle: a finished one's connection stays in its
        cache for the next request, an unfinished one's is closed."""
        if self.added:
            host = self._host or self
            _multi_remove_handle(host._multi_address, self._easy)
            self.added = False
            if host._shares_its_multi():
                host._collect_ended().pop(self._easy, None)
            if self._host is not None:
                self._host._guests -= 1
                self._host = None
        self._sink = _discard

    def request(self, session, method: str, url: str, *, json: object, headers,
                timeout: float | None) -> Response:
        """Run a whole request; its response, like session.request()'s (body in `content`).

        :raise curl_cffi.requests.exceptions.RequestException: as session.request() does.
        """
        chunks: list[bytes] = []
        self.start(session, method, url, json=json, headers=headers, timeout=timeout,
                   sink=chunks.append)
        try:
            self.step()
            while self._running():
                self.wait()
                self.step()
            error = self.failure()
            if error is not None:
                raise error
            response = self.response(session)
        finally:
            self.end()
        response.content = b"".join(chunks)
        return response

    def response(self, session) -> Response:
        """Status, headers and cookies of the answer so far (headers are complete once its
        body starts); Set-Cookie answers land in the session's jar, as with session.post()."""
        _easy_getinfo(self._easy, CurlInfo.RESPONSE_CODE, ctypes.byref(self._status))
        _easy_getinfo(self._easy, CurlInfo.HTTP_VERSION, ctypes.byref(self.http_version))
        response = Response()
        response.url = self.url
        response.status_code = self._status.value
        response.ok = 200 <= response.status_code < 400
        header_list: list[bytes] = []
        for line in b"".join(self.header_lines).splitlines():
            if not line.strip():
                continue
            if line.startswith(b"HTTP/"):  # a new block (an interim 1xx answer came first)
                header_list = []
                response.reason = Curl.get_reason_phrase(line).decode(errors="replace")
            elif line.startswith((b" ", b"\t")) and header_list:
                header_list[-1] += line
            else:
                header_list.append(line)
        response.headers = Headers(header_list)
        set_cookies = response.headers.get_list("set-cookie")
        if set_cookies:
            response.cookies = _response_cookies(set_cookies)
            if not session.discard_cookies:
                changes = self.curl.getinfo(CurlInfo.COOKIECHANGES)
                session.cookies.update_cookies_from_curl_changes(changes)
        return response

    # -- callbacks (called by curl from inside curl_multi_perform) -------------------------

    def _on_body(self, chunk: bytes) -> int:
        self._sink(chunk)
        return len(chunk)

    def _on_header(self, line: bytes) -> int:
        self.header_lines.append(line)
        return len(line)

    def close(self) -> None:
        self.end()
        self.curl.close()
        lib.curl_multi_cleanup(self.multi)


def _discard(chunk: bytes) -> None:
    pass


def set_trust(curl: Curl, directory: str | None) -> None:
    """The CAs `curl` verifies with, for a handle driven without Curl.perform() (a Transfer, a
    relay link): those of `directory` (CHATGPT_CA_DIR) when given, else curl_cffi's bundle,
    which Curl.perform() would set just before curl_easy_perform."""
    if directory:
        verify_by_directory(curl, directory)
    else:
        curl._ensure_cacert()


def verify_by_directory(curl: Curl, directory: str) -> None:
    """Verify the site (and an https proxy) against the CA certificates of `directory`, named
    by subject hash, instead of a bundle file.

    curl caches the trust store it builds from a bundle in the multi handle, and every Transfer
    has a multi handle of its own: with the ~140 public roots, about 1 MB per handle that has
    made a TLS connection, kept as long as the handle (measured: bench/tls_memory.py). From a
    directory, BoringSSL reads a certificate when a chain needs it: the store holds the few a
    site's chain uses.
    """
    curl._skip_cacert = True  # or curl_cffi would set its bundle file (CAINFO) too
    for option in (CurlOpt.CAINFO, CurlOpt.PROXY_CAINFO):  # NULL: no file, not curl's default
        code = lib._curl_easy_setopt(curl._curl, option, ffi.NULL)
        if code != 0:
            raise curl_errors.RequestException(f"curl refused to clear {option.name} ({code})")
    curl.setopt(CurlOpt.CAPATH, directory)
    curl.setopt(CurlOpt.PROXY_CAPATH, directory)


class DirectoryTrustingCurl(Curl):
    """A Curl that curl_cffi drives itself (a WebSocket's handshake) whose default CAs come from
    `directory` (verify_by_directory) instead of curl_cffi's bundle file: curl_cffi sets its
    trust just before each perform, through _ensure_cacert, which this replaces unless
    verification is off or a CA file was named."""

    def __init__(self, directory: str):
        super().__init__()
        self.ca_directory = directory

    def _ensure_cacert(self) -> None:
        if self._skip_cacert or self._is_cert_set:
            super()._ensure_cacert()
        else:
            verify_by_directory(self, self.ca_directory)


def settings_of(session, url: str) -> tuple:
    """Everything of a session and a URL that set_up() puts on a handle: a handle carrying the
    same tuple needs nothing set again. (The scheme and host are in it because the proxy chosen,
    and whether curl tunnels through it, depend on them.)"""
    scheme, host = _origin(url)
    return (scheme, host, session.auth, session.allow_redirects, session.max_redirects,
            _frozen(session.proxies), session.proxy_auth, session.trust_env, session.verify,
            session.impersonate, session.ja3, session.akamai, session.perk,
            _frozen(session.extra_fp), session.default_headers, session.http_version,
            session.interface, _frozen(session.dns), session.doh_url, _frozen(session.cert),
            _frozen(session.curl_options), getattr(session, "ca_directory", None))


def _frozen(value):
    if isinstance(value, dict):
        return tuple((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


@lru_cache(maxsize=256)
def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@lru_cache(maxsize=1024)
def request_url(url: str) -> bytes:
    """The URL as set_curl_options hands it to curl for session.request's default `quote=""`
    (which skips quote_path_and_params and only requotes)."""
    return requote_uri(url).encode()


def header_lines(base, headers, *, json_body: bool) -> list[bytes]:
    """The header lines set_curl_options gives curl for `base` (the session's) and `headers`
    (the request's), in the same order: `name: value`, `name;` for an empty value, `name:` to
    drop a header, Content-Type for a JSON body if the caller gave none, and no `Expect`."""
    fast = _ascii_lines(headers, json_body) if not base and type(headers) is dict else None
    if fast is not None:
        return fast
    merged = Headers(base, encoding=headers.encoding if isinstance(headers, Headers) else None)
    merged.update(headers)
    lines = [_line(name, value) for name, value in merged.multi_items()]
    if json_body:
        update_header_line(lines, "Content-Type", "application/json")
    update_header_line(lines, "Expect", "", replace=True)
    return [line.encode() for line in lines]


def _line(name: str, value: str | None) -> str:
    return f"{name}:" if value is None else f"{name};" if value == "" else f"{name}: {value}"


def _ascii_lines(headers: dict, json_body: bool) -> list[bytes] | None:
    """header_lines() for the common case, with no Headers round trip: a dict of ASCII text
    (which that round trip leaves byte for byte as it is) and no Expect; None otherwise."""
    values = headers.values()
    try:
        if not ("".join(headers) + "".join(values)).isascii():
            return None
    except TypeError:  # a name or value that is not text (None, bytes, a number)
        return None
    # update_header_line() finds a header by its `name:` line, so not by an empty value's.
    named = {name.lower() for name, value in headers.items() if value}
    if "expect" in named:
        return None
    lines = [(f"{name}: {value}" if value else f"{name};").encode()
             for name, value in headers.items()]
    if json_body and "content-type" not in named:
        lines.append(b"Content-Type: application/json")
    lines.append(b"Expect: ")
    return lines


def json_body(value) -> bytes:
    """A JSON body serialised as session.post(json=...) does."""
    return json.dumps(value, separators=(",", ":")).encode()


def _slist(lines: list[bytes]) -> tuple:
    """A curl_slist of `lines` in memory Python owns (no curl_slist_append call per line); the
    returned tuple keeps it alive, its first item is the list's head."""
    if not lines:
        return (ffi.NULL,)
    text = ffi.new("char[]", b"\0".join(lines) + b"\0")
    nodes = ffi.new("struct curl_slist[]", len(lines))
    offset = 0
    for index, line in enumerate(lines):
        nodes[index].data = text + offset
        nodes[index].next = nodes + index + 1 if index + 1 < len(lines) else ffi.NULL
        offset += len(line) + 1
    return (nodes, text)


def _setopt(handle: int, option: CurlOpt, value: int | bytes) -> None:
    """curl_easy_setopt on the handle at address `handle`, keeping the GIL: `value` is a
    number for the _LONG options, else bytes (curl copies them, except POSTFIELDS) or an
    address."""
    if option in _LONG:
        value = ctypes.byref(ctypes.c_long(value))
    code = _easy_setopt(handle, option, value)
    if code != 0:
        raise curl_errors.RequestException(f"curl setopt {option.name}: ({code})", code)


def _check_multi(code: int) -> None:
    if code != 0:
        text = ffi.string(lib.curl_multi_strerror(code)).decode(errors="replace")
        raise curl_errors.RequestException(f"curl multi: ({code}) {text}")


def _response_cookies(set_cookies: list) -> Cookies:
    """Response.cookies as curl_cffi fills it: every cookie the Set-Cookie headers name."""
    cookies = Cookies()
    for set_cookie in set_cookies:
        try:
            parsed = http.cookies.SimpleCookie()
            parsed.load(set_cookie)
            for name, morsel in parsed.items():
                cookies.set(name, morsel.coded_value, domain=morsel.get("domain", ""),
                            path=morsel.get("path", "/"), secure=bool(morsel.get("secure")))
        except Exception:  # noqa: BLE001, S112 - curl_cffi skips a header it cannot parse
            continue
    return cookies


def lean_request_allowed(session, method: str, options: dict) -> bool:
    """Whether `session.request(method, **options)` is one the lean path makes exactly as
    curl_cffi would: a GET, or a POST of JSON, with headers and a number (or no) timeout, on a
    session with no base URL, default parameters, retries, cache or Fingerprint object."""
    if method not in ("GET", "POST") or not options.keys() <= {"json", "headers", "timeout"}:
        return False
    if method == "GET" and options.get("json") is not None:
        return False
    if method == "POST" and options.get("json") is None:
        return False
    timeout = options.get("timeout", session.timeout)
    if timeout is not None and not isinstance(timeout, int | float):
        return False
    impersonate = session.impersonate
    if session.curl_options and not PER_REQUEST_OPTIONS.isdisjoint(session.curl_options):
        return False
    return (not session.params and not session.base_url and not session.retry.count
            and session.cache_backend is None and not session.raise_for_status
            and (impersonate is None or isinstance(impersonate, str)
                 and _is_native_impersonate_target(impersonate)))
