"""One thread per worker process runs the bodies of all its open streams: the stream pump.

With a thread per stream, every upstream event wakes the thread of its stream (the wait for the
upstream socket, a hand-over of the GIL, and often a preemption after the write to the client):
at a few hundred open streams that wake-up, not the Python work on the event, was most of the CPU
an answer cost. Here a request thread that is about to send a streamed body hands the body to its
worker's `Pump` and waits until it has been sent (buffered_worker.py). The pump thread runs each
body in a greenlet of its own: the body's generators (the answer, the face's SSE generator,
werkzeug's wrappers) run unchanged, and where they would block, on the upstream socket
(curl_transfer.Transfer.wait) or on a client that is not reading (the worker's socket writes),
they call `wait_fds()`, which parks the greenlet on the pump's selector and runs the others.
One `select` then serves every stream whose socket became readable at about the same time, with
no thread switch between them. A whole (not streamed) answer is read there too: `run()` hands
the reading to the worker's pump and its request thread waits once for the result.

Outside the pump (any other thread: the request threads, the test client, the dev server)
`wait_fds()` and `sleep()` block the calling thread as usual, so code written with them works in
both places. What a body may do while it runs in the pump (docs/stream-pump.md): wait only
through these functions (a Transfer does), never hold a lock across a wait or a `yield`, and
keep anything else that blocks short.

greenlet is optional: without it `AVAILABLE` is False and streams keep a thread each.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import selectors
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

try:
    import greenlet
except ImportError:  # pragma: no cover - exercised only where greenlet is not installed
    greenlet = None

AVAILABLE = greenlet is not None and hasattr(select, "epoll")
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
# While events keep coming, the pump looks at its sockets at most once per window: the events
# that arrive within it are handled after one wake-up of the pump thread instead of one each. A
# quiet pump waits as usual: the first event after a pause longer than the window is handled at
# once. An event waits at most one window. The window grows with the streams the pump runs
# (coalesce_window()): a look costs the pump thread the same whatever it finds, and the more
# streams share the worker's CPU, the more events one look gathers and the more a look spent
# on a few of them costs the others; and work done in one stretch costs less CPU than the same
# work done in pieces between idle spells, which leave the core's caches cold (on this machine, a
# few JSON round-trips cost 50 us back to back and 200 us after 20 ms idle). The same holds for
# each stream's own state (its transfer, parser, greenlet and sockets): a window longer than the
# time between a stream's events handles several of them in one pass per look.
# Measured with `python bench/cpu_ab.py --n 500` (docs/stream-pump.md): against a fixed 20 ms, at
# most 100 ms gave 0.88 of the CPU per answer; 200 ms against 100 ms 0.92 (`--face usage`);
# 400 ms against 200 ms 0.78 (`--face usage`, events 250 ms apart) to 0.90 (`--face whole`),
# `late` no worse in each.
COALESCE_SECONDS = 0.02  # the shortest window (a few streams)
# The window reaches its longest (STREAM_COALESCE_SECONDS, config.py) at this many streams, a
# worker's share of 500 streams on the default two workers: 1.6 ms more per stream by default.
COALESCE_FULL_AT_STREAMS = 250
# The longest by default: a reader of a worker carrying 250 streams or more sees its stream's
# news at least 2.5 times a second (five with 0.2 s, the longest until session 18).
COALESCE_MAX_SECONDS = 0.4
# How often wait_event() looks again at an event in the pump (no fd to wait on: another thread
# sets it, e.g. the store's writer thread).
EVENT_LOOK_SECONDS = 0.002
# The WSGI environ key a response sets (True) when its body may run in the pump: only bodies
# that wait through this module's functions (api/sse.py's responses).
PUMPABLE = "chatgpt_web.pumpable"
# Timers of waits that ended on their fd stay in the heap until their deadline (a heap cannot
# drop one cheaply); once they are more than half of it, and more than this many, the heap is
# rebuilt without them. A client that reads slowly makes its stream wait on its socket again and
# again, each wait with a timer of CLIENT_SEND_TIMEOUT (60 s): kept to their deadline, a few
# hundred such streams would keep a million timers.
_STALE_TIMERS_BEFORE_REBUILD = 256

log = logging.getLogger(__name__)


class _Job:
    """One body handed to the pump: `run()` in a greenlet, then the handing thread resumes."""

    __slots__ = ("run", "context", "origin", "done", "result", "error", "after")

    def __init__(self, run: Callable[[], object], context, origin: int):
        self.run, self.context, self.origin = run, context, origin
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.after: list[Callable[[], None]] = []  # for the origin thread, once done


class _Waiter:
    """A parked greenlet, until one of its fds is ready or its deadline passes (`timed`: it has
    one, in the pump's heap of timers)."""

    __slots__ = ("glet", "fired", "timed")

    def __init__(self, glet, timed: bool):
        self.glet = glet
        self.fired = False
        self.timed = timed


if AVAILABLE:
    class _StreamGreenlet(greenlet.greenlet):
        """A greenlet running one body; `pump` and `job` say where it belongs."""
else:  # pragma: no cover
    _StreamGreenlet = None


class Pump:
    """A thread with one epoll that runs bodies in greenlets (see the module docstring).

    `serve(run, context)` is called by a request thread: it blocks until `run()` has run to its
    end in the pump thread, with `context` (a contextvars.Context) as its context, and returns
    its result or raises its exception.

    An fd waited for stays in the epoll between waits, armed for one event at a time
    (EPOLLONESHOT): the next wait on it re-arms it, one epoll_ctl instead of an add and a removal
    per event. Re-arming an fd that was closed meanwhile (and perhaps reused by a new socket)
    fails with ENOENT, since the kernel forgets a closed file; it is then added anew.

    `longest_window`: the longest time between two looks while events keep coming (seconds,
    coalesce_window()).
    """

    def __init__(self, name: str = "stream-pump", longest_window: float = COALESCE_MAX_SECONDS):
        if not AVAILABLE:
            raise RuntimeError("the stream pump needs greenlet and epoll")
        self.longest_window = longest_window
        self._epoll = select.epoll()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._epoll.register(self._wake_read, select.EPOLLIN)
        # The wake-up pipe alone, for the pause between two looks (_pause()).
        self._jobs_epoll = select.epoll()
        self._jobs_epoll.register(self._wake_read, select.EPOLLIN)
        self._woken = False  # a wake-up byte is on its way (one per batch of new jobs)
        self._incoming: deque[_Job] = deque()  # from request threads
        self._ready: deque = deque()  # (greenlet, value to resume it with)
        self._timers: list = []  # heap of (deadline, sequence, waiter)
        self._stale_timers = 0  # timers in the heap whose waiter has fired already
        self._sequence = itertools.count()
        self._armed: dict[int, _Waiter | None] = {}  # fds in the epoll, and who waits on each
        self._last_events = 0.0  # when a look at the sockets last found a stream's event
        self.streams = 0  # bodies running now
        self.served = 0  # bodies run to their end since start
        self.looks = 0  # looks at the sockets (epoll waits) since start
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._hub = None
        self.thread.start()

    # -- request threads -------------------------------------------------------------------

    def serve(self, run: Callable[[], object], context=None) -> object:
        job = _Job(run, context, threading.get_ident())
        self._incoming.append(job)
        if not self._woken:
            self._woken = True
            try:
                os.write(self._wake_write, b"\0")
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already
        job.done.wait()
        for callback in job.after:
            try:
                callback()
            except Exception:  # noqa: BLE001 - the stream itself is over; log and go on
                log.exception("a stream's hand-back to its request thread failed")
        if job.error is not None:
            error, job.error = job.error, None
            raise error
        return job.result

    # -- greenlets in the pump thread ------------------------------------------------------

    def wait(self, fds: Iterable[tuple[int, int]], timeout: float | None) -> bool:
        """Park the calling greenlet until one of `fds` ((fd, READ|WRITE) pairs) is ready (True)
        or `timeout` seconds have passed (False)."""
        waiter = _Waiter(greenlet.getcurrent(), timed=timeout is not None)
        armed, epoll = self._armed, self._epoll
        for fd, events in fds:
            mask = ((select.EPOLLIN if events & READ else 0)
                    | (select.EPOLLOUT if events & WRITE else 0) | select.EPOLLONESHOT)
            if fd in armed:
                try:
                    epoll.modify(fd, mask)
                except FileNotFoundError:  # closed since: the kernel forgot it
                    epoll.register(fd, mask)
            else:
                try:
                    epoll.register(fd, mask)
                except FileExistsError:  # pragma: no cover - defensive
                    epoll.modify(fd, mask)
            armed[fd] = waiter
        if timeout is not None:
            heapq.heappush(self._timers,
                           (time.monotonic() + timeout, next(self._sequence), waiter))
        return self._hub.switch()

    def _fire(self, waiter: _Waiter, ready: bool) -> None:
        if not waiter.fired:
            waiter.fired = True
            self._ready.append((waiter.glet, ready))
            if ready and waiter.timed:
                self._stale_timers += 1

    # -- the pump thread's loop (the hub) ----------------------------------------------------

    def _run(self) -> None:
        self._hub = greenlet.getcurrent()
        while True:
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - the pump must outlive any one stream's failure
                log.exception("stream pump: unexpected error")

    def _turn(self) -> None:
        if self._ready or self._incoming:
            timeout = 0.0
        else:
            now = time.monotonic()
            timeout = max(0.0, self._timers[0][0] - now) if self._timers else -1
            pause = self._last_events + coalesce_window(self.streams, self.longest_window) - now
            if pause > 0:  # events keep coming: let those of the next moment gather
                self._pause(now + (pause if timeout < 0 else min(pause, timeout)))
                timeout = 0.0
        armed, wake = self._armed, self._wake_read
        found = False
        self.looks += 1
        for fd, _ in self._epoll.poll(timeout):
            if fd == wake:
                self._take_jobs()
                continue
            waiter = armed.get(fd)
            if waiter is not None:
                armed[fd] = None  # disarmed by EPOLLONESHOT until its next wait
                self._fire(waiter, True)
                found = True
        if found:
            self._last_events = time.monotonic()
        if self._incoming:  # jobs that came without a wake-up byte of their own
            self._take_jobs()
        timers = self._timers
        if timers:
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                waiter = heapq.heappop(timers)[2]
                if waiter.fired:
                    self._stale_timers -= 1
                else:
                    self._fire(waiter, False)
            if (self._stale_timers > _STALE_TIMERS_BEFORE_REBUILD
                    and 2 * self._stale_timers > len(timers)):
                timers[:] = [timer for timer in timers if not timer[2].fired]
                heapq.heapify(timers)
                self._stale_timers = 0
        self._run_ready()

    def _run_ready(self) -> None:
        ready = self._ready
        while ready:
            glet, value = ready.popleft()
            glet.switch(value)  # back here when it waits again or ends

    def _pause(self, until: float) -> None:
        """Let the window (coalesce_window()) pass until `until`, but start the bodies handed
        over meanwhile at once: a new stream's first words, read before its hand-over, do not
        wait for the window of the streams already running (up to STREAM_COALESCE_SECONDS,
        0.4 s by default, from 250 streams on)."""
        while (left := until - time.monotonic()) > 0:
            if not self._jobs_epoll.poll(left):
                return
            self._take_jobs()
            self._run_ready()  # each new body runs until its first wait (or its end)
            if self._timers:  # one of them may wait with a deadline before the window's end
                until = min(until, self._timers[0][0])

    def _take_jobs(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        # After draining, before taking: a job added before this line is taken below, and one
        # added after it sends a byte of its own. (Cleared before draining, a byte sent meanwhile
        # was drained while the flag stayed set, and the next job sent none: it waited unseen.)
        self._woken = False
        while self._incoming:
            job = self._incoming.popleft()
            glet = _StreamGreenlet(self._run_job, self._hub)
            glet.pump, glet.job = self, job
            if job.context is not None:
                glet.gr_context = job.context
            self.streams += 1
            self._ready.append((glet, job))

    def _run_job(self, job: _Job) -> None:
        try:
            job.result = job.run()
        except BaseException as error:  # noqa: BLE001 - raised again in the request thread
            job.error = error
        finally:
            self.streams -= 1
            self.served += 1
            job.done.set()


def coalesce_window(streams: int, longest: float = COALESCE_MAX_SECONDS) -> float:
    """Shortest time between two looks at the sockets while events keep coming, for a pump that
    runs `streams` bodies: from COALESCE_SECONDS up to `longest`, which it reaches at
    COALESCE_FULL_AT_STREAMS streams (a `longest` under COALESCE_SECONDS is the window always)."""
    return min(longest, max(COALESCE_SECONDS, streams * longest / COALESCE_FULL_AT_STREAMS))


def current() -> Pump | None:
    """The pump the calling code runs in, or None outside it."""
    if not AVAILABLE:
        return None
    glet = greenlet.getcurrent()
    return glet.pump if type(glet) is _StreamGreenlet else None


def wait_fds(fds: Iterable[tuple[int, int]], timeout: float | None) -> bool:
    """Wait until one of `fds` ((fd, READ|WRITE) pairs) is ready (True) or `timeout` seconds
    have passed (False); in the pump the other streams run meanwhile, elsewhere the calling
    thread blocks."""
    pump = current()
    if pump is not None:
        return pump.wait(fds, timeout)
    poller = select.poll()
    for fd, events in fds:
        poller.register(fd, (select.POLLIN if events & READ else 0)
                        | (select.POLLOUT if events & WRITE else 0))
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000) + 1)))


def sleep(seconds: float) -> None:
    """time.sleep(), which in the pump lets the other streams run meanwhile."""
    pump = current()
    if pump is None:
        time.sleep(seconds)
    elif seconds > 0:
        pump.wait((), seconds)


def wait_event(event: threading.Event, timeout: float) -> bool:
    """event.wait(timeout) for an event another thread sets; in the pump it looks again every
    few ms, the other streams running meanwhile, where a thread wait would stop them all."""
    if event.is_set() or current() is None:
        return event.wait(timeout)
    deadline = time.monotonic() + timeout
    while not event.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sleep(min(EVENT_LOOK_SECONDS, left))
    return True


# The pump of this worker process, once the gunicorn worker has started it (install()): run()
# hands reads to it. None elsewhere (the dev server, the test client, STREAM_PUMP=off).
_installed: Pump | None = None


def install(pump: Pump | None) -> None:
    """Make `pump` the one run() hands work to in this process (None: none)."""
    global _installed
    _installed = pump


def run(work: Callable[[], object]) -> object:
    """`work()`'s result, computed in this process's pump (install()) with the calling thread's
    context while the thread waits; where no pump is installed, or in the pump already, by the
    caller itself. For work that waits only as a body in the pump may (the module docstring):
    reading a whole answer, whose every upstream event would otherwise wake its thread."""
    pump = _installed
    if pump is None or current() is not None:
        return work()
    return pump.serve(work, greenlet.getcurrent().gr_context)


def run_in_origin(thread: int, callback: Callable[[], None]) -> bool:
    """If the calling code is a body in the pump handed over by thread `thread`, keep `callback`
    for that thread to run once the body has ended (True); else False.

    Per-thread resources (transport's pool of idle curl handles) are lent by the request thread
    and given back while its body runs in the pump: the request thread waits, untouched, until
    the body ends, and takes them back then."""
    if not AVAILABLE:
        return False
    glet = greenlet.getcurrent()
    if type(glet) is not _StreamGreenlet or glet.job.origin != thread:
        return False
    glet.job.after.append(callback)
    return True
