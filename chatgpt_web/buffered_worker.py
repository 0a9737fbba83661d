"""gunicorn's gthread worker, with each request read whole before a thread takes it.

gthread hands a connection to a thread as soon as its first byte arrives; the thread then blocks
reading the rest. A client that sends one byte every few seconds (or announces a Content-Length
it never sends) holds that thread for as long as it likes, and a few hundred such connections
hold them all. Here the worker's event loop reads every request itself, without blocking, and
submits it to the thread pool only when its headers and body are complete. Meanwhile:

- the headers must be complete within REQUEST_HEADER_TIMEOUT seconds of the connection's first
  wait, and the body within REQUEST_BODY_TIMEOUT seconds after the headers (else 408 and close);
- a body over the request limit (MAX_REQUEST_BYTES) announced by Content-Length goes to the app
  at once, which refuses it from the header; a chunked one is refused here (413) once it passes it;
- one client address holds at most MAX_CONNECTIONS_PER_IP connections per worker; more are
  closed as they are accepted. Addresses in TRUSTED_PROXIES are exempt (everyone behind them
  shares their address).

An answer is written to a client that may stop reading without closing its connection; while
a write waits, the stream's upstream is not read either (curl's own timeouts then never fire),
and a worker's graceful stop waits for the write. The kernel's socket buffers bound the memory
such a client holds, not the time: a write that can put no byte on the connection for
CLIENT_SEND_TIMEOUT seconds (nginx's send_timeout: between two bytes taken, not for the whole
answer) ends the answer as if the client had left (`ClientStalled`, a ConnectionResetError): the
body and its upstream transfer are closed, the connection is reset, the thread or the pump moves
on. The writes go through `BoundedSendSocket`, which sends without blocking and waits for the
socket with that bound, leaving the socket's own mode alone (the event loop reads the next request
from it).

A complete request meets a free thread or is refused: when every thread of the worker is serving
a request (an open stream holds its thread to the end), the request is answered 503 `busy` with
Retry-After, rather than queued inside the worker behind answers that may last minutes. "At once"
allows BUSY_GRACE: a thread that has sent its answer counts as serving until it has returned, and
on a loaded machine it may wait for the CPU in between; a client that sends its next request as
soon as it has read the answer must not be refused for that, so a request that finds every thread
taken waits up to BUSY_GRACE for one (at most one waiting request per thread) before the 503.

After a burst the worker gives memory back. Its threads end after IDLE_THREAD_SECONDS without
a request (`ShrinkingThreadPool`; concurrent.futures' pool keeps every thread it ever started,
and an idle thread keeps memory: glibc's per-thread cache of freed blocks, its stack; the
store's SQLite connections are shared by the threads, chatgpt_web/store.py). Then, once the
worker serves nothing, it returns the C allocator's free memory to the system (glibc's
malloc_trim): the curl transfers and parsed events of hundreds of streams leave freed memory
that glibc otherwise keeps for reuse, so a server that had one burst would hold its peak for good
(README "Memory").

What a trim cannot give back (Python's object arenas and glibc's heaps stay fragmented by the
objects that outlived the burst) goes with the process: a worker that is still WORKER_RECYCLE_MB
above its resident memory at start once it is idle after a burst ends, and the master forks a
fresh one in its place (gunicorn restarts any worker that exits; a fork of the master, which has
imported the package, takes about 0.1 s). Like uWSGI's reload-on-rss, but only at a moment when
nothing can be lost or kept waiting: no request in flight, no connection open (none kept alive,
none being read), every queued Store write made (group_commit.all_written), and another worker
ready to accept, so a connection that arrives meanwhile waits in the shared listen queue for that
worker, not for the fresh one. Two workers never leave together: the one that leaves holds a lock
(a Linux abstract socket name, freed by the kernel when the process ends) and a worker counts as
ready only once it holds its own name, bound when its event loop starts. With one worker, or
where there are no abstract sockets, workers are never recycled.

With STREAM_PUMP=on (the default), streamed answers are sent by the worker's stream pump
(stream_pump.py, docs/stream-pump.md): the request thread that would iterate a streamed body
hands it, with the client socket, to the pump thread and waits until the pump has sent it all,
so gunicorn's accounting, keep-alive and close stay as they are, while one thread, not one per
stream, wakes up for the upstream events of all streams. A write the client's socket cannot
take parks only its own stream (`BoundedSendSocket` waits through stream_pump.wait_fds), whose
upstream is then not read either, as with a thread per stream, up to CLIENT_SEND_TIMEOUT. Only
bodies that say they may run there (api/sse.py sets stream_pump.PUMPABLE) go to the pump; without
greenlet, or a libcurl the pump cannot wait on, every body keeps its thread.

TLS sockets (gunicorn's own certfile) are left to gthread: their bytes cannot be read before the
handshake (and their streams keep their threads). Their answers are bounded too, by a socket
timeout on each write of at most one TLS record (`BoundedTlsSendSocket`).

`PendingRequest` is the pure part: it is told the bytes as they come and says when a request is
complete.
"""
from __future__ import annotations

import ctypes
import errno
import gc
import ipaddress
import json
import logging
import mmap
import os
import queue
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import Counter, deque
from concurrent import futures
from functools import partial

from gunicorn import http
from gunicorn.http.wsgi import Response as GunicornResponse
from gunicorn.workers.gthread import TConn, ThreadWorker

from . import group_commit, stream_pump, transport
from .config import Config
from .curl_transfer import pump_problems

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
# Connections one worker reads requests from at once. They are not counted in gunicorn's
# worker_connections (which is sized to the threads, so that a busy worker stops accepting): a
# connection still sending its request needs no thread.
MAX_BUFFERING = 1000
_SCAN_INTERVAL = 0.5  # seconds between looks for connections past their deadline
# Seconds a client refused as `busy` is asked to wait: any of the worker's streams that ends frees
# a thread, and with hundreds of them open one ends every few hundred milliseconds.
BUSY_RETRY_AFTER = 1
BUSY_GRACE = 0.5  # seconds a complete request may wait for a thread before 503 busy
# Requests served at once that make the worker's next idle moment give free memory back. Below
# it there is little to give back; a trim walks the allocator's heaps (about 10 ms after 300).
TRIM_AFTER = 32
# Seconds a pool thread waits for a request before it ends; a burst starts threads again on demand
# (about 0.1 ms each).
IDLE_THREAD_SECONDS = 2.0


def _find_malloc_trim():
    """glibc's malloc_trim(pad), or None where the C library has none (musl, macOS)."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


MALLOC_TRIM = _find_malloc_trim()
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def hold_name(name: str) -> socket.socket | None:
    """Bind the Linux abstract socket `name`: only one process holds a name at a time, and the
    kernel frees it when the socket closes or the process ends. None when another process holds
    it, or where abstract names do not exist."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind("\0" + name)
    except OSError:
        sock.close()
        return None
    return sock


def _ready_name(master: int, worker: int) -> str:
    return f"chatgpt_web-{master}-ready-{worker}"


def _live_children(parent: int) -> list[int]:
    """Processes whose parent is `parent`, zombies left out (from /proc)."""
    children = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent and fields[0] not in "ZX":
            children.append(int(entry.name))
    return children


def resident_mb() -> float:
    """This process's resident memory in MB (Linux), or 0 where /proc is not there."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE / 2**20
    except OSError:
        return 0.0


class ShrinkingThreadPool:
    """The executor gthread submits requests to, with threads that end when idle.

    Like concurrent.futures.ThreadPoolExecutor, it starts a thread only when no idle one is
    there to take the work, up to `max_threads`; unlike it, a thread that has waited
    `idle_seconds` for work ends. `_idle` is the number of waiting threads minus the queued
    tasks (negative: tasks wait for a thread), so a thread whose wait ends while a task is
    queued takes it instead of ending.

    `submit()` never waits for a thread to start. `Thread.start()` returns only once the new
    thread has run, and under load that is two turns at the GIL among hundreds of busy threads:
    about 3 ms each at N=500 (bench/concurrency.py), which the worker's event loop spent per
    request (750 ms of a 250-request burst) instead of reading the next requests. The threads
    are started by a starter thread (one per pool, from its first submit), and each new thread
    starts one more that is still wanted before it takes its task, so the starts of a burst
    overlap instead of queueing behind one another.
    """

    def __init__(self, max_threads: int, idle_seconds: float = IDLE_THREAD_SECONDS):
        self.max_threads, self.idle_seconds = max_threads, idle_seconds
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # alive or about to start
        self._idle = 0
        self._shut_down = False
        self._wanted = threading.Semaphore(0)  # threads promised and not started yet
        self._starter: threading.Thread | None = None

    @property
    def threads(self) -> int:
        """Threads alive now (idle ones included)."""
        return self._threads

    def submit(self, fn, *args) -> futures.Future:
        future: futures.Future = futures.Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._tasks.put((future, fn, args))
            self._idle -= 1  # a waiting thread is promised this task...
            grow = self._idle < 0 and self._threads < self.max_threads
            if grow:
                self._threads += 1  # ...or, with none, a new one waits for it
                self._idle += 1
                if self._starter is None:
                    self._starter = threading.Thread(target=self._start_wanted,
                                                     name="request-starter", daemon=True)
                    self._starter.start()
        if grow:
            self._wanted.release()
        return future

    def _start_wanted(self) -> None:
        while True:
            self._wanted.acquire()
            self._start_one()

    def _start_one(self) -> None:
        threading.Thread(target=self._work, name="request", daemon=False).start()

    def _work(self) -> None:
        if self._wanted.acquire(blocking=False):
            self._start_one()  # see the class's docstring: starts overlap
        while True:
            try:
                future, fn, args = self._tasks.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if not self._tasks.empty():
                        continue  # promised a task while the wait ended: take it
                    self._idle -= 1
                    self._threads -= 1
                    return
            if future is None:  # shutdown
                with self._lock:
                    self._threads -= 1
                return
            result = error = None
            running = future.set_running_or_notify_cancel()
            if running:
                try:
                    result = fn(*args)
                except BaseException as exc:
                    error = exc
            with self._lock:
                self._idle += 1  # waiting again before the caller hears: it may submit at once
            if running and error is not None:
                future.set_exception(error)
            elif running:
                future.set_result(result)
            del future, fn, args, result, error  # nothing of the request stays with the thread

    def shutdown(self, wait: bool = True) -> None:
        """No new work; idle threads end now, busy ones after their request."""
        with self._lock:
            self._shut_down = True
            for _ in range(self._threads):
                self._tasks.put((None, None, None))


# Connections a worker may hold beyond its least loaded sibling before it leaves new ones to it.
FAIR_MARGIN = 4
# A sibling that has not written its count for this long (a hung or stopped event loop) is left
# out: new connections are not left waiting for it.
_SIBLING_LIVE_SECONDS = 3.0
# Seconds between two looks at the siblings' counts while this worker leaves them the accepting.
_FAIR_POLL = 0.005


class LoadBoard:
    """How many connections each worker of one master holds, in memory the master shares with
    every worker it forks (an anonymous shared mapping made when this module is imported, which
    the master does before forking), so that a burst is shared fairly between the workers.

    All workers wait on one listening socket, and the kernel gives a new connection to whichever
    is first to accept it. A worker's event loop shares the GIL with its own request threads, so
    which one is first is a matter of scheduling, not of load: in 500-connection bursts on two
    cores the split was 389/111, 345/155 and 190/310, and the worker with the larger share took
    correspondingly longer to start its answers (the last of 389 reached the upstream 1.45 s after
    the burst, the last of 111 0.53 s), since what each answer does before its first upstream
    request is Python under that worker's one GIL. Here a worker holding more than FAIR_MARGIN
    connections beyond its least loaded live sibling stops accepting until that sibling has caught
    up (`BufferedThreadWorker.accept`). The least loaded worker always accepts, so a connection
    never waits for a pause; a sibling whose count is older than _SIBLING_LIVE_SECONDS (hung,
    stopped) or gone (its slot cleared on exit, or by the master when it died) is left out.

    One slot per worker: (pid, connections, time.monotonic() of its last write), written only by
    that worker (slots are reserved by the master, before the fork).
    """

    SLOTS = 32
    _SLOT = struct.Struct("qqd")

    def __init__(self):
        self._map = mmap.mmap(-1, self.SLOTS * self._SLOT.size)  # MAP_SHARED | MAP_ANONYMOUS

    def _read(self, index: int) -> tuple[int, int, float]:
        return self._SLOT.unpack_from(self._map, index * self._SLOT.size)

    def _write(self, index: int, pid: int, connections: int, written: float) -> None:
        self._SLOT.pack_into(self._map, index * self._SLOT.size, pid, connections, written)

    def reserve(self) -> int | None:
        """A free slot for a worker about to be forked (in the master, which forks one at a
        time), held by the master's pid until the worker writes its own; None when all are
        taken (the worker then neither counts nor waits for anyone)."""
        for index in range(self.SLOTS):
            pid = self._read(index)[0]
            if pid == 0 or not _process_exists(pid):
                self._write(index, os.getpid(), 0, 0.0)
                return index
        return None

    def publish(self, index: int, connections: int) -> None:
        """This worker holds `connections` now."""
        self._write(index, os.getpid(), connections, time.monotonic())

    def leave(self, index: int) -> None:
        """This worker accepts no more connections (it is stopping)."""
        self._write(index, 0, 0, 0.0)

    def leave_pid(self, pid: int) -> None:
        """Clear the slot of a worker that died without clearing it (in the master)."""
        for index in range(self.SLOTS):
            if self._read(index)[0] == pid:
                self.leave(index)

    def least_of_others(self, index: int) -> int | None:
        """The fewest connections a live sibling of slot `index` holds, or None when none is."""
        now = time.monotonic()
        least = None
        for other in range(self.SLOTS):
            pid, connections, written = self._read(other)
            if (other != index and pid and now - written < _SIBLING_LIVE_SECONDS
                    and (least is None or connections < least)):
                least = connections
        return least


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


BOARD = LoadBoard()


INCOMPLETE, COMPLETE, TOO_LARGE, HEADERS_TOO_LARGE = "incomplete", "complete", "too_large", "431"


class PendingRequest:
    """Follows one HTTP/1.1 request as its bytes arrive: `feed(data)` says whether it is complete.

    Anything it cannot make sense of (a bad Content-Length, a malformed chunk) is COMPLETE: the
    request then goes to gunicorn's own parser, which answers 400 from the bytes already read.
    """

    def __init__(self, max_body: int):
        self.max_body = max_body
        self.data = bytearray()
        self.headers_done = False
        self._length: int | None = None  # Content-Length, or None for chunked
        self._chunked = False
        self._body_start = 0
        self._cursor = 0        # chunked: where the next chunk-size line starts
        self._decoded = 0       # chunked: body bytes announced so far

    def feed(self, data: bytes) -> str:
        self.data += data
        if not self.headers_done:
            end = self.data.find(b"\r\n\r\n")
            if end < 0:
                return HEADERS_TOO_LARGE if len(self.data) > MAX_HEADER_BYTES else INCOMPLETE
            self.headers_done = True
            self._body_start = self._cursor = end + 4
            verdict = self._read_headers(bytes(self.data[:end]))
            if verdict is not None:
                return verdict
        if self._chunked:
            return self._chunks()
        return COMPLETE if len(self.data) - self._body_start >= self._length else INCOMPLETE

    def _read_headers(self, head: bytes) -> str | None:
        lengths, encodings = [], []
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                encodings.append(value.strip().lower())
        if encodings:
            if encodings != [b"chunked"] or lengths:
                return COMPLETE  # gunicorn refuses these itself
            self._chunked = True
            return None
        if not lengths:
            return COMPLETE  # no body
        try:
            self._length = int(lengths[0])
        except ValueError:
            return COMPLETE
        if len(set(lengths)) > 1 or self._length < 0 or self._length > self.max_body:
            return COMPLETE  # refused from the header alone, by gunicorn or by the app
        return None

    def _chunks(self) -> str:
        data = self.data
        while True:
            line_end = data.find(b"\r\n", self._cursor)
            if line_end < 0:
                return COMPLETE if len(data) - self._cursor > 1024 else INCOMPLETE
            try:
                size = int(bytes(data[self._cursor:line_end]).split(b";")[0].strip(), 16)
            except ValueError:
                return COMPLETE
            if size == 0:  # last chunk: trailers end with an empty line
                if data.startswith(b"\r\n", line_end + 2) or data.find(b"\r\n\r\n", line_end) >= 0:
                    return COMPLETE
                return INCOMPLETE
            if self._decoded + size > self.max_body:
                return TOO_LARGE
            chunk_end = line_end + 2 + size
            if len(data) < chunk_end + 2:
                return INCOMPLETE
            self._decoded += size
            self._cursor = chunk_end + 2


# How much of what a client sent after its answer a close reads (_close_after_answer).
_CLOSE_DRAIN_BYTES = 64 * 1024


def _close_after_answer(sock: socket.socket) -> None:
    """Close a connection after its answer as RFC 9112 section 9.6 asks, without waiting.

    The FIN goes first, and what the client has already sent is read, so that the close does not
    become a reset that cuts off the end of the answer. gunicorn's close_graceful (27.x) then
    also waits up to 2 s for the client's own FIN; it does that in the worker's one event loop,
    so every other connection of the worker waited behind a client that keeps its socket open.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        drained = 0
        while drained < _CLOSE_DRAIN_BYTES:
            data = sock.recv(4096)
            if not data:
                break
            drained += len(data)
    except OSError:  # BlockingIOError: nothing more has come; or the client is gone
        pass
    finally:
        sock.close()


class _Conn(TConn):
    """A gthread connection that tells its worker when it closes (per-address counts), and
    closes after an answer without waiting for its client (_close_after_answer)."""

    def __init__(self, *args, on_close=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending: PendingRequest | None = None
        self.deadline = 0.0
        self._on_close = on_close

    def close(self, graceful=False):
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
        if graceful:
            _close_after_answer(self.sock)
        else:
            super().close()


class ClientStalled(ConnectionResetError):
    """The client took none of its answer for CLIENT_SEND_TIMEOUT seconds. A ConnectionResetError
    (ECONNRESET), so the answer ends as it does when a client leaves: gunicorn's request thread
    takes it for a gone client (no traceback), closes the body (its upstream transfer with it)
    and the connection; the access line says outcome=incomplete."""

    def __init__(self, send_timeout: float):
        super().__init__(errno.ECONNRESET, f"the client took no byte of its answer for "
                                           f"{send_timeout:g} s (CLIENT_SEND_TIMEOUT)")


def _stalled(sock: socket.socket, send_timeout: float) -> ClientStalled:
    """The error that ends the answer of a client that stalled on `sock`.

    The connection's coming close is made a reset (SO_LINGER 0): the unsent rest of the answer is
    dropped at once, where a normal close would leave it in the kernel, offered to a client that
    does not read until TCP gives up on it (minutes)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    log.info("a client took none of its answer for %g s (CLIENT_SEND_TIMEOUT): its answer ends "
             "and its connection is reset", send_timeout)
    return ClientStalled(send_timeout)


class BoundedSendSocket:
    """The client socket as gunicorn's Response writes an answer to it: a write that can put no
    byte on the connection for `send_timeout` seconds (CLIENT_SEND_TIMEOUT, re-armed after each
    byte taken, like nginx's send_timeout) raises ClientStalled.

    Each send is non-blocking (MSG_DONTWAIT), whatever mode gunicorn left the socket in, so the
    socket itself is not changed (the event loop reads requests and keep-alive from it later).
    A send the socket cannot take waits for it to become writable through stream_pump.wait_fds:
    in the pump that parks this stream only (its upstream is not read meanwhile), in a request
    thread it blocks the thread, as a blocking send did, but not for longer than the bound."""

    __slots__ = ("_sock", "_fd", "_send_timeout")

    def __init__(self, sock: socket.socket, send_timeout: float):
        self._sock, self._fd, self._send_timeout = sock, sock.fileno(), send_timeout

    def sendall(self, data) -> None:
        rest = memoryview(data)
        while rest:
            try:
                rest = rest[self._sock.send(rest, socket.MSG_DONTWAIT):]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            if not stream_pump.wait_fds(((self._fd, stream_pump.WRITE),), self._send_timeout):
                raise _stalled(self._sock, self._send_timeout)


# Most bytes of one TLS write while CLIENT_SEND_TIMEOUT bounds it: one TLS record.
_TLS_SLICE = 16 * 1024


class BoundedTlsSendSocket:
    """BoundedSendSocket for a TLS socket (gunicorn's own certfile), which takes no
    MSG_DONTWAIT: each write of at most one TLS record (_TLS_SLICE) must be taken within
    `send_timeout` seconds (a socket timeout, set for the write only: Python's timeout bounds a
    whole sendall, not the time between two bytes of it), else ClientStalled."""

    __slots__ = ("_sock", "_send_timeout")

    def __init__(self, sock, send_timeout: float):
        self._sock, self._send_timeout = sock, send_timeout

    def sendall(self, data) -> None:
        view, sock = memoryview(data), self._sock
        sock.settimeout(self._send_timeout)
        try:
            for start in range(0, len(view), _TLS_SLICE):
                sock.sendall(view[start:start + _TLS_SLICE])
        except TimeoutError:
            raise _stalled(sock, self._send_timeout) from None
        finally:
            sock.settimeout(None)  # blocking, as gunicorn's request thread had it


class PumpedBody:
    """A streamed body that the worker's pump sends: iterating it (gunicorn's request thread
    does, to write it) hands the body and the Response to the pump, waits until the pump has
    written all of it, and yields nothing more; errors are raised here as if the writes had
    been made here. gunicorn then ends the response and calls close() as for any body.

    The Response writes to a BoundedSendSocket, whose waits for a client that does not read
    park the stream's greenlet in the pump instead of blocking the pump thread."""

    def __init__(self, pump: stream_pump.Pump, body, response: GunicornResponse):
        self._pump, self._body, self._response = pump, body, response

    def __iter__(self):
        # The body runs in this thread's own context (Flask's contexts, contextvars): the
        # thread waits meanwhile, so nothing else uses it.
        self._pump.serve(self._send, stream_pump.greenlet.getcurrent().gr_context)
        return iter(())

    def _send(self) -> None:
        write = self._response.write
        for item in self._body:
            write(item)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def _answer(status: str, code: str, message: str, headers: str = "") -> bytes:
    body = json.dumps({"message": message, "code": code}).encode()
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n"
            f"{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body


BUSY = _answer("503 Service Unavailable", "busy",
               "every thread of this server is serving an answer; retry shortly (the server's "
               "capacity is WEB_CONCURRENCY x GUNICORN_THREADS)",
               f"Retry-After: {BUSY_RETRY_AFTER}\r\n")


class BufferedThreadWorker(ThreadWorker):
    """gthread, reading each request whole in the event loop before a thread serves it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # In the master, before the fork: this worker's slot on the LoadBoard.
        self.board_slot = BOARD.reserve()
        self._leaving_to_siblings = False  # not accepting: a sibling holds fewer connections

    def init_process(self):
        config = Config.from_env()
        self.max_body = config.request_body_limit
        self.header_timeout = config.request_header_timeout
        self.body_timeout = config.request_body_timeout
        self.per_ip_cap = config.max_connections_per_ip
        self.send_timeout = config.client_send_timeout
        self.trusted = config.trusted_proxies
        self.buffering: set[_Conn] = set()
        self.per_ip: Counter[str] = Counter()
        self.serving = 0  # requests handed to a thread whose thread has not returned yet
        self.waiting: deque[_Conn] = deque()  # complete requests given BUSY_GRACE for a thread
        self.busiest = 0  # most requests served at once since free memory was last given back
        self.idle_since: float | None = None  # when the worker last became idle
        self._serving_lock = threading.Lock()
        self._next_scan = 0.0
        self.recycle_mb = config.worker_recycle_mb
        self.started_mb = 0.0  # resident memory when the event loop started
        self.recycle_due = False  # still recycle_mb over started_mb after a burst's trim
        self._names: list[socket.socket] = []  # abstract names held until the process ends
        self.pump = self._start_pump(config)
        super().init_process()

    def run(self):
        self.started_mb = resident_mb()
        self._say_ready()
        try:
            super().run()
        finally:
            # A recycled worker has nothing to drain, so its loop never turns again after it
            # stops accepting: its siblings must not wait for it until the master reaps it.
            if self.board_slot is not None:
                BOARD.leave(self.board_slot)

    # --- the stream pump ----------------------------------------------------------------------
    def _start_pump(self, config: Config) -> stream_pump.Pump | None:
        if not config.stream_pump or self.cfg.is_ssl:
            return None
        missing = [] if stream_pump.AVAILABLE else ["greenlet"]
        if transport.STREAM_READER != "multi-handle":
            missing.append("the multi-handle stream reader")
        missing += pump_problems()
        if missing:
            self.log.warning("STREAM_PUMP is on but this installation lacks %s: each stream "
                             "keeps a thread of its own", ", ".join(missing))
            return None
        pump = stream_pump.Pump(longest_window=config.stream_coalesce_seconds)
        stream_pump.install(pump)  # whole answers are read there too (answers.Answer.read)
        return pump

    def load_wsgi(self):
        super().load_wsgi()
        self.wsgi = partial(self._app_with_bounded_sends, self.wsgi)

    def _app_with_bounded_sends(self, app, environ, start_response):
        """The app, whose answers are written to a socket that bounds a client that stops
        reading (CLIENT_SEND_TIMEOUT), and whose streamed bodies the pump sends when there is one
        (gunicorn's `start_response` is the bound method of the Response that writes to the
        client)."""
        body = app(environ, start_response)
        response = getattr(start_response, "__self__", None)
        if not isinstance(response, GunicornResponse):
            return body
        if isinstance(body, environ["wsgi.file_wrapper"]):
            return body  # gunicorn sends files with sendfile(); the app sends none
        if isinstance(response.sock, ssl.SSLSocket):
            response.sock = BoundedTlsSendSocket(response.sock, self.send_timeout)
        else:
            response.sock = BoundedSendSocket(response.sock, self.send_timeout)
        if self.pump is not None and environ.get(stream_pump.PUMPABLE):
            return PumpedBody(self.pump, body, response)
        return body

    # --- connections ----------------------------------------------------------------------
    def _address(self, client) -> str | None:
        return client[0] if isinstance(client, tuple) and client else None

    def _exempt(self, address: str | None) -> bool:
        if address is None or not self.per_ip_cap:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def _forget(self, conn: _Conn) -> None:
        address = self._address(conn.client)
        if address is not None and not self._exempt(address):
            self.per_ip[address] -= 1
            if self.per_ip[address] <= 0:
                del self.per_ip[address]

    # --- sharing a burst fairly between workers (LoadBoard) -----------------------------------
    def connections(self) -> int:
        """Connections this worker holds: handed to threads, kept alive, or being read."""
        return self.nr_conns + len(self.buffering)

    def _fair_to_accept(self) -> bool:
        if self.board_slot is None:
            return True
        least = BOARD.least_of_others(self.board_slot)
        return least is None or self.connections() <= least + FAIR_MARGIN

    def set_accept_enabled(self, enabled):
        # gunicorn's loop enables accepting again at every turn while it could accept; a worker
        # leaving new connections to a sibling looks at the counts again instead.
        if enabled and self._leaving_to_siblings and self.alive and not self._fair_to_accept():
            return
        self._leaving_to_siblings = False
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout):
        if self.board_slot is not None:
            if self.alive:
                BOARD.publish(self.board_slot, self.connections())
            else:
                BOARD.leave(self.board_slot)
        if self._leaving_to_siblings:
            timeout = min(timeout, _FAIR_POLL)
        super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener):
        if self.cfg.is_ssl:
            return super().accept(listener)
        if not self._fair_to_accept():
            super().set_accept_enabled(False)
            self._leaving_to_siblings = True
            return
        try:
            sock, client = listener.accept()
        except BlockingIOError:
            return
        except OSError:
            return
        address = self._address(client)
        if len(self.buffering) >= MAX_BUFFERING:
            sock.close()
            return
        if not self._exempt(address):
            if self.per_ip[address] >= self.per_ip_cap:
                sock.close()  # this address already holds its share of the worker
                return
            self.per_ip[address] += 1
        conn = _Conn(self.cfg, sock, client, listener.getsockname(), on_close=self._forget)
        self._buffer(conn)
        if self.board_slot is not None:
            BOARD.publish(self.board_slot, self.connections())

    def on_client_socket_readable(self, conn, client):
        if self.cfg.is_ssl or not isinstance(conn, _Conn):
            return super().on_client_socket_readable(conn, client)
        # A kept-alive connection starts its next request: read it whole too.
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self.nr_conns -= 1  # counted again when its request is complete
        self._buffer(conn)

    def _buffer(self, conn: _Conn) -> None:
        conn.sock.setblocking(False)
        conn.pending = PendingRequest(self.max_body)
        conn.deadline = time.monotonic() + self.header_timeout
        self.buffering.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _readable(self, conn: _Conn, sock) -> None:
        try:
            data = sock.recv(256 * 1024)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        pending = conn.pending
        had_headers = pending.headers_done
        verdict = pending.feed(data)
        if verdict == INCOMPLETE:
            if pending.headers_done and not had_headers:
                conn.deadline = time.monotonic() + self.body_timeout
            return
        if verdict == TOO_LARGE:
            self._drop(conn, _answer("413 Content Too Large", "request_too_large",
                                     f"the request body is larger than {self.max_body} bytes"))
            return
        if verdict == HEADERS_TOO_LARGE:
            self._drop(conn, _answer("431 Request Header Fields Too Large", "headers_too_large",
                                     "the request headers are too large"))
            return
        self.poller.unregister(sock)
        self.buffering.discard(conn)
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(bytes(pending.data))
        conn.pending = None
        conn.data_ready = True
        self.nr_conns += 1
        self.enqueue_req(conn)

    # --- threads ----------------------------------------------------------------------------
    def get_thread_pool(self):
        return ShrinkingThreadPool(self.cfg.threads)

    def enqueue_req(self, conn):
        """Hand a complete request to a free thread; when there is none, give it BUSY_GRACE to
        become free (see the module's docstring), and refuse it 503 busy after that."""
        if self.serving >= self.cfg.threads and isinstance(conn, _Conn) and not self.cfg.is_ssl:
            if len(self.waiting) < self.cfg.threads:
                conn.deadline = time.monotonic() + BUSY_GRACE
                self.waiting.append(conn)
            else:
                self._refuse_busy(conn)
            return
        self._start(conn)

    def _start(self, conn):
        with self._serving_lock:
            self.serving += 1
        self.busiest = max(self.busiest, self.serving)
        super().enqueue_req(conn)

    def handle(self, conn):
        # Counted down by the thread itself as it returns (not later, when the event loop hears
        # of it): the moment it is free again.
        try:
            return super().handle(conn)
        finally:
            with self._serving_lock:
                self.serving -= 1
            if self.waiting:
                # In the event loop, which owns the waiting requests (this is a pool thread).
                self.method_queue.defer(self._start_waiting)

    def _start_waiting(self) -> None:
        while self.waiting and self.serving < self.cfg.threads:
            self._start(self.waiting.popleft())

    def _refuse_busy(self, conn: _Conn) -> None:
        self.nr_conns -= 1  # counted when its request was complete
        self._drop(conn, BUSY)

    def _drop(self, conn: _Conn, answer: bytes | None = None) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.buffering.discard(conn)
        if answer:
            try:
                conn.sock.send(answer)  # best effort: the socket is non-blocking
            except OSError:
                pass
        conn.close()

    def murder_keepalived(self, force=False):
        super().murder_keepalived(force)
        now = time.monotonic()
        if not force and now < self._next_scan:
            return
        self._next_scan = now + _SCAN_INTERVAL
        self._give_back_memory(now)
        if self.recycle_due:
            self._recycle_if_safe()
        self._start_waiting()  # in case a thread returned between its notice and our reading
        while self.waiting and (force or self.waiting[0].deadline <= now):
            self._refuse_busy(self.waiting.popleft())
        for conn in [c for c in self.buffering if force or c.deadline <= now]:
            self._drop(conn, None if force else _answer(
                "408 Request Timeout", "request_timeout",
                "the request did not arrive in time (REQUEST_HEADER_TIMEOUT, "
                "REQUEST_BODY_TIMEOUT)"))

    # --- memory -----------------------------------------------------------------------------
    def _give_back_memory(self, now: float) -> None:
        """Once a burst of at least TRIM_AFTER requests is over (nothing served) and its threads
        have ended, return the C allocator's free memory to the system; once per burst."""
        if self.serving:
            self.idle_since = None
            return
        if self.idle_since is None:
            self.idle_since = now
        if (self.busiest < TRIM_AFTER or MALLOC_TRIM is None
                or now - self.idle_since < IDLE_THREAD_SECONDS + _SCAN_INTERVAL):
            return
        busiest, self.busiest = self.busiest, 0
        before = resident_mb()
        # What ended threads left in reference cycles would wait for a collection that an idle
        # process never triggers.
        gc.collect()
        MALLOC_TRIM(0)
        after = resident_mb()
        self.log.debug("idle after %d requests at once: resident memory %.0f MB -> %.0f MB",
                       busiest, before, after)
        self.recycle_due = bool(self.recycle_mb) and after - self.started_mb >= self.recycle_mb

    def _say_ready(self) -> None:
        """Hold this worker's ready name (the module doc): its siblings may now recycle."""
        if len(self._names) == 0:
            name = hold_name(_ready_name(self.ppid, self.pid))
            if name is not None:
                self._names.append(name)

    def _sibling_ready(self) -> bool:
        """Whether another worker of this master is accepting connections (holds its name)."""
        for pid in _live_children(self.ppid):
            if pid == self.pid:
                continue
            probe = hold_name(_ready_name(self.ppid, pid))
            if probe is None:
                return True
            probe.close()  # not ready yet: it will bind the name itself when it is
        return False

    def _recycle_if_safe(self) -> None:
        """End this worker, for a fresh fork of the master, if nothing can be lost or kept
        waiting by it (the module doc); else try again at the next scan. The event loop ends
        after this scan without polling again, so no connection is accepted in between."""
        self._say_ready()  # (if binding it failed at the start, while a sibling probed it)
        if (not self.alive or self.serving or self.nr_conns or self.buffering or self.waiting
                or not group_commit.all_written()):
            return
        lock = hold_name(f"chatgpt_web-{self.ppid}-recycling")
        if lock is None:
            return  # another worker is leaving
        if not self._sibling_ready():
            lock.close()
            return
        self._names.append(lock)  # held until this process has ended
        self.log.info("recycling this idle worker: resident memory %.0f MB, %.0f MB at its "
                      "start (WORKER_RECYCLE_MB=%d); a fresh worker takes its place",
                      resident_mb(), self.started_mb, self.recycle_mb)
        self.recycle_due = False
        self.alive = False
