"""Store writes queued by many threads and made together: a group commit.

A thread that finds no write running makes every queued change in one call of `write(queued)`:
its own and those queued while the previous call ran. The others wait for that call. Each caller
returns once its own change is written (or raises the `error` the write set on it, or what the
whole call raised), as if it had written alone: a burst of N callers costs a few Store
transactions instead of N (each one the shared store's write lock, and every statement a release
of the GIL), and one caller alone pays no wait at all.

`write` sees the queued entries in queue order and may put a result on each (`entry.result`),
so a counter incremented by n entries at once can still give each the count it would have got
alone. The rate limiter (limits.py) and the usage ledger (ledger.py) count with it.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from . import stream_pump
from .errors import ServiceUnavailable

# Seconds a caller waits for the write before it, and for its own.
WRITE_WAIT = 15.0


class Queued:
    """One caller's change waiting in a `GroupCommit`: `item` as submitted, then `result` (what
    the write put there) or `error` (what writing it raised)."""

    __slots__ = ("item", "result", "error", "done", "_written")

    def __init__(self, item, *, waited_on: bool = False):
        self.item, self.result, self.error, self.done = item, None, None, False
        # Only a change queued for the writer thread is waited on; one a caller writes itself
        # (or sees written once it holds the writing lock) needs no Event, which is most of the
        # cost of a rate-limit hit.
        self._written = threading.Event() if waited_on else None

    def mark_written(self) -> None:
        self.done = True
        if self._written is not None:
            self._written.set()

    def wait(self, timeout: float = 2 * WRITE_WAIT) -> Queued:
        """Return once the change is in the Store. :raise: what writing it raised, or
        ServiceUnavailable store_lock_timeout when it took longer than `timeout`."""
        # In the stream pump (a /v1 answer's chat memory place, a key's admission count at the
        # end of its answer) the other streams run while this waits for the writer thread.
        if not self.done and not (self._written is not None
                                  and stream_pump.wait_event(self._written, timeout)):
            raise ServiceUnavailable("the store is busy; try again shortly", "store_lock_timeout")
        if self.error is not None:
            raise self.error
        return self


class GroupCommit:
    """Changes of many threads written together by `write(list of Queued)` (module doc)."""

    def __init__(self, write: Callable[[list[Queued]], None], name: str = "group-commit"):
        self._write = write
        self._name = name
        self._queue: list[Queued] = []
        self._queue_lock = threading.Condition()
        self._writing = threading.Lock()
        self._writer: threading.Thread | None = None  # for submit_later, started on first use
        _EVERY.add(self)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return not self._queue and not self._writing.locked()

    def submit(self, item) -> Queued:
        """Write `item` (with whatever else is queued) and return its entry.
        :raise: what the write raised; ServiceUnavailable store_lock_timeout."""
        queued = self._enqueue(item)
        if not self._writing.acquire(timeout=WRITE_WAIT):
            raise ServiceUnavailable("the store is busy; try again shortly", "store_lock_timeout")
        try:
            if not queued.done:  # else the previous writer took it
                self._write_queue()
        finally:
            self._writing.release()
        return queued.wait(0)

    def submit_later(self, item) -> Queued:
        """Queue `item` for this process's writer thread and return at once; `wait()` on the
        entry for it to be written."""
        queued = self._enqueue(item, waited_on=True)
        with self._queue_lock:
            if self._writer is None or not self._writer.is_alive():  # (a forked child has none)
                self._writer = threading.Thread(target=self._write_in_background, daemon=True,
                                                name=self._name)
                self._writer.start()
            self._queue_lock.notify()
        return queued

    def _enqueue(self, item, waited_on: bool = False) -> Queued:
        queued = Queued(item, waited_on=waited_on)
        with self._queue_lock:
            self._queue.append(queued)
        return queued

    def _write_queue(self) -> None:
        """Write everything queued (the caller holds `_writing`)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        try:
            if batch:
                self._write(batch)
        except BaseException as exc:  # the rest of the batch shares its fate
            for entry in batch:
                entry.error = entry.error or exc
        for entry in batch:
            entry.mark_written()

    def _write_in_background(self) -> None:
        while True:
            with self._queue_lock:
                while not self._queue:
                    self._queue_lock.wait()
            with self._writing:
                self._write_queue()


_EVERY: weakref.WeakSet[GroupCommit] = weakref.WeakSet()


def all_written() -> bool:
    """Whether every change queued in this process is in the Store: a worker that is about to
    exit while idle (buffered_worker.py's recycling) asks first, so that it loses none."""
    return all(commit.idle for commit in list(_EVERY))
