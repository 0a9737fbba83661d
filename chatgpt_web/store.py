"""Small key-value state shared by all worker processes: tokens, counters, pins.

`open_store(config)` returns a DiskStore (diskcache, JSON values, 0700 directory). If the cache
directory cannot be used (read-only filesystem), it warns once and falls back to a temporary
directory, then to a process-local MemoryStore, so the service never fails to start.
Keys that derive from credentials must already be hashes: the store never sees a secret.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import threading
import time
from typing import Any, Protocol

import diskcache

log = logging.getLogger(__name__)


class Store(Protocol):
    """The state interface every backend implements."""

    kind: str

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any, expire: float | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def hit(self, key: str, window: float) -> tuple[int, float]: ...
    # After hit(), get(key) reads the window's count.
    def writable(self) -> bool: ...


class DiskStore:
    """diskcache-backed store; safe across threads and processes on one host."""

    kind = "disk"

    def __init__(self, directory: str):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        self._cache = diskcache.Cache(directory, disk=diskcache.JSONDisk, eviction_policy="none")
        # Serializes this process's hit() transactions (see hit()).
        self._hit_lock = threading.Lock()

    def get(self, key: str) -> Any:
        """The live value at `key`, or None."""
        return self._cache.get(key)

    def set(self, key: str, value: Any, expire: float | None = None) -> None:
        """Store JSON-able `value`, forgotten after `expire` seconds if given."""
        self._cache.set(key, value, expire=expire)

    def delete(self, key: str) -> None:
        """Forget `key`."""
        self._cache.delete(key)

    def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one hit in the fixed window at `key`: (hits so far, unix time the window resets)."""
        # One transaction: concurrent hits from other processes wait for it. (Cache.incr cannot
        # be used: JSONDisk stores the number as JSON bytes, which incr cannot add to.)
        # The threads of this process queue on a lock first: left to SQLite, a burst of them
        # would each poll the database lock with SQLite's busy handler, sleeping up to 100 ms
        # between tries, so one request's counting could take seconds.
        with self._hit_lock, self._cache.transact():
            now = time.time()
            reset_at = self._cache.get(key + ":reset")
            if reset_at is None or reset_at <= now:
                reset_at, count = now + window, 0  # the window starts at its first hit
                self._cache.set(key + ":reset", reset_at, expire=window)
            else:
                count = self._cache.get(key) or 0
            count += 1
            self._cache.set(key, count, expire=max(0.001, reset_at - now))
        return count, reset_at

    def writable(self) -> bool:
        """True if a value can be written and read back now."""
        try:
            self._cache.set("__probe__", 1, expire=5)
            return self._cache.get("__probe__") == 1
        except (OSError, sqlite3.Error):
            return False


class MemoryStore:
    """Process-local fallback with the same interface (used when no directory is writable)."""

    kind = "memory"

    def __init__(self):
        self._data: dict[str, tuple[Any, float | None]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str):
        item = self._data.get(key)
        if item and item[1] is not None and item[1] <= time.time():
            del self._data[key]
            return None
        return item

    def get(self, key: str) -> Any:
        with self._lock:
            item = self._live(key)
            return item[0] if item else None

    def set(self, key: str, value: Any, expire: float | None = None) -> None:
        with self._lock:
            self._data[key] = (value, time.time() + expire if expire else None)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def hit(self, key: str, window: float) -> tuple[int, float]:
        with self._lock:
            item = self._live(key)
            if item is None:
                item = (0, time.time() + window)
            item = (item[0] + 1, item[1])
            self._data[key] = item
            return item

    def writable(self) -> bool:
        return True


def open_store(config) -> Store:
    """The store for `config`: CACHE_DIR, else a temp directory, else memory (one warning)."""
    directories = [config.cache_dir]
    try:
        directories.append(os.path.join(tempfile.gettempdir(), f"chatgpt_web-{os.getuid()}"))
    except OSError:  # gettempdir() raises FileNotFoundError when no temp directory is writable
        pass
    for directory in directories:
        try:
            return DiskStore(directory)
        except (OSError, sqlite3.Error) as exc:
            log.warning("cache directory %s is not usable (%s); trying the next fallback",
                        directory, type(exc).__name__)
    log.warning("no writable cache directory; tokens and counters are kept in memory only")
    return MemoryStore()
