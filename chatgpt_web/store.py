"""Small key-value state shared by all worker processes: tokens, counters, pins, account health.

`open_store(config)` returns a RedisStore when REDIS_URL is set (state shared by every instance),
otherwise a DiskStore (diskcache, JSON values, 0700 directory, shared by the worker processes of
one machine). If the cache directory cannot be used (read-only filesystem), it warns once and
falls back to a temporary directory, then to a process-local MemoryStore, so the service never
fails to start. With REDIS_URL there is no fallback: several instances writing state to places the
others cannot see would quietly break rate limits, health and pins, so an unreachable Redis makes
the requests that need state answer 503 `store_unavailable` instead.

Every backend stores JSON only (never pickle) and behaves the same; tests/test_store.py runs one
suite over all three. Keys that derive from credentials must already be hashes: the store never
sees a secret.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import diskcache

from .errors import ServiceUnavailable

log = logging.getLogger(__name__)


class Store(Protocol):
    """The state interface every backend implements."""

    kind: str

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any, expire: float | None = None) -> None: ...
    # Set only if no live value is there: True if this call stored it (atomic across writers).
    def add(self, key: str, value: Any, expire: float | None = None) -> bool: ...
    def delete(self, key: str) -> None: ...
    def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]: ...
    # After hit(), get(key) reads the window's count (`amount` hits counted at once).
    def merge(self, key: str, changes: dict, expire: float | None = None) -> dict: ...
    # Read several keys and write what change(values) returns, as one atomic step; see Update.
    def update(self, keys: list[str], change: Update) -> None: ...
    # Exclusive across threads, processes and (Redis) instances; see hold_lock().
    def lock(self, key: str, ttl: float, wait: float) -> contextlib.AbstractContextManager: ...
    def writable(self) -> bool: ...


# `Store.update(keys, change)`: change(values) gets the live values of `keys` (None where there is
# none) and returns, for each key, (new value, expire seconds or None) or None to leave it as it
# is. Nothing another writer does can fall between the read and the write, in any process or
# instance. `change` may be called more than once (Redis retries it when another writer got in
# between), so it must only compute; an exception it raises aborts the update, nothing written.
Update = Callable[[list[Any]], list[tuple[Any, float | None] | None]]

LOCK_PREFIX = "lock:"


@contextlib.contextmanager
def hold_lock(acquire: Callable[[str], bool], release: Callable[[str], None],
              wait: float) -> Iterator[None]:
    """Hold a lock that `acquire(owner)` takes (True when it did) and `release(owner)` frees only
    if `owner` still holds it. Waits up to `wait` seconds, polling with a growing pause.

    Each backend's lock expires after its `ttl` on its own, so that a process killed while
    holding it cannot block everyone for ever; the holder must finish its work within `ttl`.

    :raise ServiceUnavailable: code store_lock_timeout when another holder kept it past `wait`.
    """
    owner = secrets.token_hex(16)
    deadline = time.monotonic() + wait
    pause = 0.002
    while not acquire(owner):
        if time.monotonic() >= deadline:
            raise ServiceUnavailable("another worker has been renewing these credentials for too "
                                     "long; try again shortly", "store_lock_timeout")
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.05)
    try:
        yield
    finally:
        release(owner)


def _merged(current: Any, changes: dict) -> dict:
    """`current` updated with `changes`; a missing or non-dict value counts as {}."""
    return {**current, **changes} if isinstance(current, dict) else dict(changes)


class SharedConnections:
    """The SQLite connections of one diskcache.Cache, lent to one operation at a time.

    diskcache opens a connection for each thread that uses the cache and keeps it for the
    thread's life: about 200 KB each (SQLite's page cache and lookaside memory, the statement
    cache, its maps of the database and its WAL index), so a worker with 500 open streams held
    500 of them (README "Memory"). Here a thread borrows one of at most LIMIT connections for
    the length of a store operation, and waits for one when all are lent: SQLite lets one
    writer at a time anyway, and a read takes a fraction of a millisecond.

    diskcache reads the calling thread's connection from `cache._local.con` (checking
    `cache._local.pid` against fork), so lending one is setting those two for the operation
    (diskcache 5.x; tests/test_store.py checks that operations really use the lent ones).
    """

    LIMIT = 8  # connections per process

    def __init__(self, cache: diskcache.Cache):
        self._cache = cache
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._reset()
        cache.close()  # the connection diskcache opened for its set-up in this thread

    def _reset(self) -> None:
        """Start with no connection (in a forked child: close the parent's first, before this
        process takes SQLite locks of its own, as diskcache does)."""
        for connection in self._idle:
            connection.close()
        self._pid = os.getpid()
        self._idle = []
        self._free = threading.BoundedSemaphore(self.LIMIT)
        self.opened = 0  # connections opened in this process (tests)

    @contextlib.contextmanager
    def lent(self) -> Iterator[None]:
        """Lend the calling thread a connection for what runs inside (nested: the same one).

        :raise sqlite3.OperationalError: none came free within the cache's timeout."""
        local = self._cache._local
        if getattr(local, "con", None) is not None:
            yield  # an outer operation of this thread holds one
            return
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's connections are not ours
                self._reset()
            free = self._free
        if not free.acquire(timeout=self._cache.timeout):
            raise sqlite3.OperationalError("every SQLite connection stayed busy")
        try:
            connection, fresh = self._take()
            local.pid, local.con = os.getpid(), connection
            reusable = False
            try:
                if fresh:
                    self._apply_settings()
                reusable = True
                yield
            finally:
                del local.con
                self._give_back(connection, reusable)
        finally:
            free.release()

    def _take(self) -> tuple[sqlite3.Connection, bool]:
        """An idle connection, or a new one (True)."""
        with self._lock:
            if self._idle:
                return self._idle.pop(), False
            self.opened += 1
        return sqlite3.connect(
            os.path.join(self._cache.directory, diskcache.core.DBNAME),
            timeout=self._cache.timeout, isolation_level=None, check_same_thread=False), True

    def _apply_settings(self) -> None:
        """The per-connection pragmas (WAL, cache and mmap sizes) from the cache's Settings
        table, on the connection lent to this thread, as diskcache sets them on its own."""
        settings = self._cache._local.con.execute("SELECT key, value FROM Settings").fetchall()
        for key, value in settings:
            if key.startswith("sqlite_"):
                self._cache.reset(key, value, update=False)

    def _give_back(self, connection: sqlite3.Connection, reusable: bool) -> None:
        """Keep it for the next operation, unless it is not set up or was left inside a
        transaction by a failure: the next one starts clean."""
        with self._lock:
            if reusable and not connection.in_transaction and self._pid == os.getpid():
                self._idle.append(connection)
                return
        connection.close()


class DiskStore:
    """diskcache-backed store; safe across threads and processes on one host."""

    kind = "disk"

    def __init__(self, directory: str):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
        self.directory = directory
        self._cache = diskcache.Cache(directory, disk=diskcache.JSONDisk, eviction_policy="none")
        self.connections = SharedConnections(self._cache)
        # Serializes this process's hit() and update() transactions (see hit()).
        self._hit_lock = threading.Lock()
        self._failing = False

    @contextlib.contextmanager
    def _guarded(self) -> Iterator[None]:
        """A full or read-only CACHE_DIR (after start, or in one worker only) is the same fault
        as an unreachable Redis: 503 store_unavailable for whatever needs state, never a 500.
        Failing open instead would lift rate limits and forget account health and pins unseen.

        Every operation runs on a connection lent by SharedConnections."""
        try:
            with self.connections.lent():
                yield
        except (OSError, sqlite3.Error) as exc:
            if not self._failing:
                self._failing = True
                log.warning("cache directory cannot be written (%s); requests that need state "
                            "answer 503 until it can", type(exc).__name__)
            raise ServiceUnavailable("the state store (CACHE_DIR) cannot be written (disk full "
                                     "or read-only); try again shortly",
                                     "store_unavailable") from None
        if self._failing:
            self._failing = False
            log.info("cache directory writable again")

    def get(self, key: str) -> Any:
        """The live value at `key`, or None."""
        with self._guarded():
            return self._cache.get(key)

    def set(self, key: str, value: Any, expire: float | None = None) -> None:
        """Store JSON-able `value`, forgotten after `expire` seconds if given (<= 0: at once)."""
        with self._guarded():
            self._cache.set(key, value, expire=expire)

    def add(self, key: str, value: Any, expire: float | None = None) -> bool:
        """Store `value` only if `key` holds no live value (diskcache's atomic add): True if
        this call stored it. Two processes adding at once: exactly one wins."""
        if expire is not None and expire <= 0:
            return False
        with self._guarded():
            return bool(self._cache.add(key, value, expire=expire))

    def delete(self, key: str) -> None:
        """Forget `key`."""
        with self._guarded():
            self._cache.delete(key)

    def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count one hit (or `amount`) in the fixed window at `key`: (hits so far, unix time
        the window resets)."""
        # One transaction: concurrent hits from other processes wait for it. (Cache.incr cannot
        # be used: JSONDisk stores the number as JSON bytes, which incr cannot add to.)
        # The threads of this process queue on a lock first: left to SQLite, a burst of them
        # would each poll the database lock with SQLite's busy handler, sleeping up to 100 ms
        # between tries, so one request's counting could take seconds.
        with self._hit_lock, self._guarded(), self._cache.transact():
            now = time.time()
            reset_at = self._cache.get(key + ":reset")
            if reset_at is None or reset_at <= now:
                reset_at, count = now + window, 0  # the window starts at its first hit
                self._cache.set(key + ":reset", reset_at, expire=window)
            else:
                count = self._cache.get(key) or 0
            count += amount
            self._cache.set(key, count, expire=max(0.001, reset_at - now))
        return count, reset_at

    def merge(self, key: str, changes: dict, expire: float | None = None) -> dict:
        """Atomically update the dict at `key` (or {}) with `changes`; the new dict."""
        # transact() holds SQLite's write lock, so no other process writes between read and write.
        with self._guarded(), self._cache.transact():
            value = _merged(self._cache.get(key), changes)
            self._cache.set(key, value, expire=expire)
        return value

    def update(self, keys: list[str], change: Update) -> None:
        """Read `keys` and write what `change` returns in one SQLite transaction (module
        comment above `Update`)."""
        # The process's threads queue on the same lock as hit()'s, for the same reason.
        with self._hit_lock, self._guarded(), self._cache.transact():
            writes = change([self._cache.get(key) for key in keys])
            for key, write in zip(keys, writes, strict=True):
                if write is not None:
                    self._cache.set(key, write[0], expire=write[1])

    def lock(self, key: str, ttl: float, wait: float) -> contextlib.AbstractContextManager:
        """Exclusive hold of `key` for up to `ttl` seconds among every process using this
        directory (SQLite's atomic add), waiting up to `wait`.

        :raise ServiceUnavailable: store_lock_timeout."""
        name = LOCK_PREFIX + key

        def acquire(owner: str) -> bool:
            with self._guarded():
                return self._cache.add(name, owner, expire=ttl)

        def release(owner: str) -> None:
            with self._guarded(), self._cache.transact():
                if self._cache.get(name) == owner:
                    self._cache.delete(name)

        return hold_lock(acquire, release, wait)

    def writable(self) -> bool:
        """True if a value can be written and read back now."""
        try:
            with self.connections.lent():
                self._cache.set("__probe__", 1, expire=5)
                return self._cache.get("__probe__") == 1
        except (OSError, sqlite3.Error):
            return False


class MemoryStore:
    """Process-local fallback with the same interface (used when no directory is writable).

    Values are kept JSON-encoded, so that they behave as in the other stores: a tuple comes back as
    a list, a non-JSON value is refused, and changing a returned value never changes the store.
    """

    kind = "memory"

    def __init__(self):
        self._data: dict[str, tuple[str, float | None]] = {}
        self._lock = threading.Lock()

    def _read(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= time.time():
            del self._data[key]
            return None
        return json.loads(item[0])

    def _write(self, key: str, value: Any, expire: float | None) -> None:
        encoded = json.dumps(value)  # before touching the data: a TypeError leaves it unchanged
        self._data[key] = (encoded, None if expire is None else time.time() + expire)

    def get(self, key: str) -> Any:
        """The live value at `key`, or None."""
        with self._lock:
            return self._read(key)

    def set(self, key: str, value: Any, expire: float | None = None) -> None:
        """Store JSON-able `value`, forgotten after `expire` seconds if given (<= 0: at once)."""
        with self._lock:
            self._write(key, value, expire)

    def add(self, key: str, value: Any, expire: float | None = None) -> bool:
        """Store `value` only if `key` holds no live value: True if this call stored it."""
        with self._lock:
            if self._read(key) is not None or (expire is not None and expire <= 0):
                return False
            self._write(key, value, expire)
            return True

    def delete(self, key: str) -> None:
        """Forget `key`."""
        with self._lock:
            self._data.pop(key, None)

    def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count one hit (or `amount`) in the fixed window at `key`: (hits so far, unix time
        the window resets)."""
        with self._lock:
            count, reset_at = self._read(key), self._read(key + ":reset")
            if count is None or reset_at is None:
                count, reset_at = 0, time.time() + window
                self._write(key + ":reset", reset_at, window)
            # The counter keeps the window's end as its expiry, as diskcache's incr() does.
            self._data[key] = (json.dumps(count + amount), self._data[key + ":reset"][1])
            return count + amount, reset_at

    def merge(self, key: str, changes: dict, expire: float | None = None) -> dict:
        """Atomically update the dict at `key` (or {}) with `changes`; the new dict."""
        with self._lock:
            value = _merged(self._read(key), changes)
            self._write(key, value, expire)
            return value

    def update(self, keys: list[str], change: Update) -> None:
        """Read `keys` and write what `change` returns, atomically (module comment above
        `Update`)."""
        with self._lock:
            writes = change([self._read(key) for key in keys])
            encoded = [None if write is None else (json.dumps(write[0]), write[1])
                       for write in writes]  # every value checked before any is written
            if len(encoded) != len(keys):
                raise ValueError("update: one write (or None) per key")
            for key, write in zip(keys, encoded, strict=True):
                if write is not None:
                    self._data[key] = (write[0], None if write[1] is None
                                       else time.time() + write[1])

    def lock(self, key: str, ttl: float, wait: float) -> contextlib.AbstractContextManager:
        """Exclusive hold of `key` for up to `ttl` seconds among this process's threads."""
        name = LOCK_PREFIX + key

        def acquire(owner: str) -> bool:
            with self._lock:
                if self._read(name) is not None:
                    return False
                self._write(name, owner, ttl)
                return True

        def release(owner: str) -> None:
            with self._lock:
                if self._read(name) == owner:
                    del self._data[name]

        return hold_lock(acquire, release, wait)

    def writable(self) -> bool:
        """Always True: memory can always be written."""
        return True


# KEYS[1] the counter, KEYS[2] the window's end; ARGV[1] the window in ms, ARGV[2] the window's
# end (unix seconds, JSON) should this hit open it, ARGV[3] the hits to count. One script runs
# atomically in Redis, so hits from every process and instance are counted exactly once and all
# see the same window.
_HIT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[3])
if count == tonumber(ARGV[3]) or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[1])
end
return {count, redis.call('GET', KEYS[2])}
"""
_MERGE_ATTEMPTS = 100
# Deletes the lock KEYS[1] only if its owner is still ARGV[1] (not one who took it after expiry).
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# Seconds a Redis connect or answer may take (Redis answers in milliseconds; the client retries
# once around both the connection and the command, so a mute Redis costs up to 4 x the answer
# timeout), and how long after a failure operations fail at once (writable(), the readiness
# probe, still tries and ends it).
REDIS_CONNECT_SECONDS = 1.0
REDIS_ANSWER_SECONDS = 0.5
DOWN_SECONDS = 5.0


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _queue_write(pipe, full_key: str, encoded: str, expire: float | None) -> None:
    """Queue on a MULTI pipeline the write of one record (its deletion when already expired)."""
    if expire is not None and expire <= 0:
        pipe.delete(full_key)
    else:
        pipe.set(full_key, encoded, px=_milliseconds(expire) if expire is not None else None)


class RedisStore:
    """Redis-backed store: state shared by every process of every instance using one Redis.

    Values are JSON strings under `prefix + key`. The client connects on first use, not here
    (importing the app or building it must not need Redis), reconnects by itself after an outage,
    and every failure to reach Redis becomes ServiceUnavailable `store_unavailable` (503).
    The URL is never logged or shown: it may hold a password.
    """

    kind = "redis"

    def __init__(self, url: str, prefix: str = "chatgpt_web:"):
        # Imported here so that a disk-only deployment never pays for loading the client.
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        self.prefix = prefix
        self._errors = (redis.RedisError,)
        self._watch_error = redis.WatchError
        # Short timeouts: a request waiting on an unreachable or mute Redis (one that accepts
        # connections and never answers) should fail in seconds, not hang until the caller's
        # deadline. One quick retry hides a restart or a failover (a hit retried after a timeout
        # may then count twice: it errs on the side of limiting). After a failure, operations
        # fail at once for DOWN_SECONDS (`_run`), so one request pays one timeout, not one per
        # operation: about 2 s for a Redis that never answers.
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=REDIS_CONNECT_SECONDS, socket_timeout=REDIS_ANSWER_SECONDS,
            health_check_interval=30,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 1))
        self._hit = self._client.register_script(_HIT_SCRIPT)
        self._release = self._client.register_script(_RELEASE_SCRIPT)
        self._down = False
        self._down_until = 0.0

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _unavailable(self, exc: Exception | None) -> ServiceUnavailable:
        if not self._down and exc is not None:
            self._down = True
            # The type only: a redis error message names the host and port.
            log.warning("redis store unreachable (%s); requests that need state answer 503",
                        type(exc).__name__)
        return ServiceUnavailable("the shared state store (Redis) cannot be reached; "
                                  "try again shortly", "store_unavailable")

    def _run(self, operation, *args, **kwargs):
        if self._down and time.monotonic() < self._down_until:
            raise self._unavailable(None)  # failed moments ago: do not wait for it again
        try:
            result = operation(*args, **kwargs)
        except self._errors as exc:
            self._down_until = time.monotonic() + DOWN_SECONDS
            raise self._unavailable(exc) from None
        if self._down:
            self._down = False
            log.info("redis store reachable again")
        return result

    @staticmethod
    def _decode(raw: bytes | None) -> Any:
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:  # not written by us (keys are prefixed, so it should not happen)
            return None

    def get(self, key: str) -> Any:
        """The live value at `key`, or None. :raise ServiceUnavailable: Redis unreachable."""
        return self._decode(self._run(self._client.get, self._key(key)))

    def set(self, key: str, value: Any, expire: float | None = None) -> None:
        """Store JSON-able `value`, forgotten after `expire` seconds if given (<= 0: at once).

        :raise TypeError: `value` is not JSON. :raise ServiceUnavailable: Redis unreachable.
        """
        encoded = json.dumps(value)
        if expire is not None and expire <= 0:
            self._run(self._client.delete, self._key(key))
        else:
            self._run(self._client.set, self._key(key), encoded,
                      px=_milliseconds(expire) if expire is not None else None)

    def add(self, key: str, value: Any, expire: float | None = None) -> bool:
        """Store `value` only if `key` holds no live value (SET NX): True if this call stored
        it; exactly one of several instances adding at once wins.

        :raise TypeError: `value` is not JSON. :raise ServiceUnavailable: Redis unreachable.
        """
        encoded = json.dumps(value)
        if expire is not None and expire <= 0:
            return False
        return bool(self._run(self._client.set, self._key(key), encoded, nx=True,
                              px=_milliseconds(expire) if expire is not None else None))

    def delete(self, key: str) -> None:
        """Forget `key`. :raise ServiceUnavailable: Redis unreachable."""
        self._run(self._client.delete, self._key(key))

    def hit(self, key: str, window: float, amount: int = 1) -> tuple[int, float]:
        """Count one hit (or `amount`) in the fixed window at `key`: (hits so far, unix time the
        window resets).

        :raise ServiceUnavailable: Redis unreachable.
        """
        reset_if_new = time.time() + window
        count, reset_at = self._run(
            self._hit, keys=[self._key(key), self._key(key + ":reset")],
            args=[_milliseconds(window), json.dumps(reset_if_new), amount])
        reset_at = self._decode(reset_at)
        return int(count), float(reset_at) if reset_at is not None else reset_if_new

    def merge(self, key: str, changes: dict, expire: float | None = None) -> dict:
        """Atomically update the dict at `key` (or {}) with `changes`; the new dict.

        An optimistic WATCH/MULTI transaction, retried when another writer got in between: the
        merge stays in Python's json, where Redis's Lua cjson would round numbers to 14 digits
        and turn [] into {}. :raise ServiceUnavailable: Redis unreachable.
        """
        full_key = self._key(key)
        json.dumps(changes)  # a TypeError now, before any round trip

        def attempt(pipe) -> dict:
            pipe.watch(full_key)
            value = _merged(self._decode(pipe.get(full_key)), changes)
            pipe.multi()
            _queue_write(pipe, full_key, json.dumps(value), expire)
            pipe.execute()
            return value
        return self._optimistic(attempt)

    def update(self, keys: list[str], change: Update) -> None:
        """Read `keys` and write what `change` returns (module comment above `Update`): an
        optimistic WATCH/MULTI transaction over every key, retried as merge()'s is.

        :raise ServiceUnavailable: Redis unreachable, or too busy to get the update in.
        """
        full_keys = [self._key(key) for key in keys]

        def attempt(pipe) -> None:
            pipe.watch(*full_keys)
            writes = change([self._decode(raw) for raw in pipe.mget(full_keys)])
            encoded = [None if write is None else (json.dumps(write[0]), write[1])
                       for write in writes]
            pipe.multi()
            for full_key, write in zip(full_keys, encoded, strict=True):
                if write is not None:
                    _queue_write(pipe, full_key, *write)
            pipe.execute()
        self._optimistic(attempt)

    def _optimistic(self, attempt):
        """`attempt(pipe)`'s result, run as a WATCH/MULTI transaction on a fresh pipeline and
        retried when another writer got in between.

        :raise ServiceUnavailable: Redis unreachable, or too busy to get the write in.
        """
        for tries in range(_MERGE_ATTEMPTS):
            try:
                with self._client.pipeline() as pipe:
                    return attempt(pipe)
            except self._watch_error:
                # Someone else's write won this round; back off a little so writers spread out.
                time.sleep(random.uniform(0, 0.001 * min(tries + 1, 20)))
            except self._errors as exc:
                raise self._unavailable(exc) from None
        raise ServiceUnavailable("the shared state store is too busy to update this record",
                                 "store_unavailable")

    def lock(self, key: str, ttl: float, wait: float) -> contextlib.AbstractContextManager:
        """Exclusive hold of `key` for up to `ttl` seconds among every process of every instance
        using this Redis (SET NX PX), waiting up to `wait`.

        :raise ServiceUnavailable: store_lock_timeout, or store_unavailable (Redis unreachable).
        """
        name = self._key(LOCK_PREFIX + key)

        def acquire(owner: str) -> bool:
            return bool(self._run(self._client.set, name, owner, nx=True,
                                  px=_milliseconds(ttl)))

        def release(owner: str) -> None:
            self._run(self._release, keys=[name], args=[owner])

        return hold_lock(acquire, release, wait)

    def writable(self) -> bool:
        """True if a value can be written to Redis and read back now."""
        try:
            self._client.set(self._key("__probe__"), "1", px=5000)
            ok = self._client.get(self._key("__probe__")) == b"1"
        except self._errors:
            return False
        if ok and self._down:
            self._down, self._down_until = False, 0.0  # back: stop failing fast at once
            log.info("redis store reachable again")
        return ok


def open_store(config) -> Store:
    """The store for `config`: Redis with REDIS_URL; else CACHE_DIR, a temp directory, memory."""
    if config.redis_url:
        # Only the kind is logged: the URL may carry a password.
        log.info("state store: redis")
        return RedisStore(config.redis_url, config.redis_prefix)
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
