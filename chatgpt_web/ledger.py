"""What each client key used, counted in the shared Store: the usage ledger, quotas, leases.

Three kinds of records, all under `usage:v1:`. Every change to one is atomic across threads,
worker processes and, with Redis, instances, so two instances counting one key never lose an
update: totals and ledger records are read and written in one `Store.update`; holds and leases,
and the checks that must see a key's records unchanged until they are written (quota admission,
token holds), run while holding the key's Store lock (`Store.lock`):

    totals:<key>:day:<YYYY-MM-DD>, totals:<key>:month:<YYYY-MM>
        {"requests": n, "tokens": n}: what the quotas read. A request counts when it is admitted
        (so a quota of N lets exactly N through); its tokens when its answer is complete. The
        requests of a key without quotas are counted in `<totals key>:count` instead (the
        Store's atomic `hit`, no lock: nothing has to be checked first); readers add both.
    holds:<key>
        {hold id: [tokens, unix expiry]}: tokens held for answers in flight (token quotas only).
    ledger:<key>:<YYYY-MM-DD>
        {"<model>|<backend>": {"requests", "prompt_tokens", "completion_tokens"}} per answer,
        kept USAGE_RETENTION_DAYS; `days:<YYYY-MM-DD>` lists the keys with a ledger that day.
    lease:<key>
        {lease id: unix expiry}: the key's requests in flight, for its concurrency cap.

Token quotas are kept by reservation: before an answer starts, `hold_tokens()` holds its prompt
tokens plus a completion reserve (COMPLETION_RESERVE, or what the quota has left if that is less)
against the day's and month's room (limit - used - held by other answers in flight), and refuses
the answer whose prompt does not fit. When the answer is complete, `record()` replaces the hold by
the tokens really used; an answer that never completes gives its hold back (`drop_hold()`), and a
hold whose process died lapses after `hold_ttl`. So answers in flight together never take more
than the quota between them; what can still pass it is the part of one answer's completion beyond
its reserve (the web backend cannot be told to stop at a token count, and the service does not cut
an answer it has begun to give).

Writes many threads make at once are made together (group_commit.py): a burst of admissions of
keys without quotas is counted with one `hit` per period, and a burst of settled answers with one
lock and one write of each record per key. Each caller still waits until its own change is in
the Store, so every worker and instance reads it at once, and quotas stay exact. (The service
counts a request of a key without quotas while the request runs and waits for the count before
the answer goes out: nothing is checked, so counting need not delay the upstream request.)

Days and months are UTC. No prompt, answer or address is ever recorded: only counts.
"""
from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from .errors import RateLimited, ServiceUnavailable
from .group_commit import GroupCommit, Queued
from .key_policy import PERIODS, QUOTA_KINDS, KeyPolicy
from .metrics import KEY_REQUESTS, KEY_TOKENS
from .store import Store

PREFIX = "usage:v1:"
LOCK_TTL = 10.0  # seconds: a holder only reads and writes a few small records
LOCK_WAIT = 15.0
LOCAL_LOCKS = 64  # in-process queues, shared by key ids of the same hash
# The official SDK waits at most 60 s for a Retry-After; past that, retrying only spends requests.
SDK_RETRY_WAIT = 60
NO_RETRY = {"x-should-retry": "false"}
# Completion tokens held for an answer in flight (fewer when the quota has fewer left).
COMPLETION_RESERVE = 1024
# Retry-After when the quota's room is held by answers still in flight (it frees as they end).
HELD_RETRY = 2


class _Answer(NamedTuple):
    """A settled answer waiting to be added to its key's ledger (`Ledger.record`)."""

    key_id: str
    moment: datetime
    row: str  # "<model>|<backend>"
    requests: int
    prompt_tokens: int
    completion_tokens: int
    hold: str | None


def period_name(moment: datetime, period: str) -> str:
    return moment.strftime("%Y-%m-%d" if period == "day" else "%Y-%m")


def period_reset(moment: datetime, period: str) -> datetime:
    """The start of the next UTC day or month after `moment`."""
    if period == "day":
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC) + timedelta(days=1)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


class Ledger:
    """Quotas, concurrency leases and usage counters of client keys, in `store`."""

    def __init__(self, store: Store, retention_days: int = 90,
                 clock: Callable[[], float] = time.time, metrics_per_key: bool = False,
                 hold_ttl: float = 360.0):
        self.store = store
        self.retention = retention_days * 86400
        self._clock = clock
        self.metrics_per_key = metrics_per_key
        self.hold_ttl = hold_ttl
        self._local_locks = [threading.Lock() for _ in range(LOCAL_LOCKS)]
        self._days_listed: set[tuple[str, str]] = set()  # (day, key) in that day's key list
        # Admissions of keys without quotas (written by a thread of their own: submit_later).
        self._counts = GroupCommit(self._write_counts, "ledger-writer")
        self._records = GroupCommit(self._write_records)  # settled answers

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    @contextlib.contextmanager
    def _lock(self, key_id: str) -> Iterator[None]:
        """The key's Store lock. The threads of this process queue for it here first: left to
        the Store, each would poll it with growing pauses (up to 50 ms), so a burst of one key's
        requests would sleep far past their turns."""
        local = self._local_locks[zlib.crc32(key_id.encode()) % len(self._local_locks)]
        if not local.acquire(timeout=LOCK_WAIT):
            raise ServiceUnavailable("the usage ledger of this key is busy; try again shortly",
                                     "store_lock_timeout")
        try:
            with self.store.lock(f"{PREFIX}{key_id}", LOCK_TTL, LOCK_WAIT):
                yield
        finally:
            local.release()

    def _totals_key(self, key_id: str, moment: datetime, period: str) -> str:
        return f"{PREFIX}totals:{key_id}:{period}:{period_name(moment, period)}"

    def _used(self, key_id: str, moment: datetime, period: str) -> dict:
        """{"requests", "tokens"} of the key in the period holding `moment`: the totals plus
        the requests counted without the lock (keys without quotas, see `admit`)."""
        used = dict(self.store.get(self._totals_key(key_id, moment, period)) or {})
        counted = self.store.get(self._totals_key(key_id, moment, period) + ":count")
        used["requests"] = used.get("requests", 0) + (counted or 0)
        return used

    def _add_totals(self, key_id: str, moment: datetime, requests: int, tokens: int) -> None:
        """Add to the day's and the month's totals, in one atomic update (records settled
        without the key's lock write them too)."""
        self.store.update([self._totals_key(key_id, moment, period) for period in PERIODS],
                          lambda values: [_totals_added(value, moment, period, requests, tokens)
                                          for value, period in zip(values, PERIODS, strict=True)])

    # --- admission -----------------------------------------------------------------------------
    def admit(self, key_id: str, policy: KeyPolicy | None, *,
              wait: bool = True) -> Queued | None:
        """Count one request of the key `key_id`, if its quotas (`policy`'s) have room.

        A key without quotas has nothing to check: with `wait=False` its request is counted by
        this process's writer thread while the caller goes on, and the pending count is returned
        (`wait()` on it before the answer ends, so that whoever reads the usage next sees it).

        :raise RateLimited: 429 quota_exhausted with Retry-After at the period's reset (and
            x-should-retry: false when that is further away than the SDK would wait).
        """
        now = self._now()
        quota = policy.quota if policy else {}
        if not quota:
            # Counted with the Store's atomic counter, without the key's lock, which a burst of
            # one key's requests would otherwise queue on before their answers; the admissions
            # of a burst are counted together.
            if not wait:
                return self._counts.submit_later((key_id, now))
            self._counts.submit((key_id, now))
            return None
        with self._lock(key_id):
            for period in PERIODS:
                used = self._used(key_id, now, period)
                for kind in QUOTA_KINDS:
                    limit = quota.get((kind, period))
                    if limit is not None and used.get(kind, 0) >= limit:
                        raise _exhausted(kind, period, limit, now)
            self._add_totals(key_id, now, 1, 0)
        return None

    def _write_counts(self, admitted: list[Queued]) -> None:
        """Count admissions (key id, moment) of keys without quotas: one `hit` per counter."""
        counters: dict[str, list] = {}  # counter -> [admissions, window]
        for key_id, now in (entry.item for entry in admitted):
            for period in PERIODS:
                name = self._totals_key(key_id, now, period) + ":count"
                window = (period_reset(now, period) - now).total_seconds() + 86400
                counters.setdefault(name, [0, window])[0] += 1
        for name, (count, window) in counters.items():
            self.store.hit(name, window, amount=count)

    def _live_holds(self, key_id: str) -> dict[str, list]:
        now = self._clock()
        return {hold: entry for hold, entry in (self.store.get(f"{PREFIX}holds:{key_id}")
                                                or {}).items()
                if isinstance(entry, list) and len(entry) == 2 and entry[1] > now}

    def _keep_holds(self, key_id: str, holds: dict[str, list]) -> None:
        longest = max((until for _, until in holds.values()), default=0) - self._clock()
        self.store.set(f"{PREFIX}holds:{key_id}", holds, expire=longest if longest > 0 else 0)

    def hold_tokens(self, key_id: str, policy: KeyPolicy | None, prompt_tokens: int) -> str | None:
        """Hold the tokens of an answer about to start against the key's token quotas: its
        `prompt_tokens` and a completion reserve. The hold's id (for `record`/`drop_hold`), or
        None when the key has no token quota.

        :raise RateLimited: quota_exhausted: the prompt does not fit in what is left (Retry-After
            at the reset), or only in what answers in flight hold (Retry-After: HELD_RETRY).
        """
        quota = policy.quota if policy else {}
        limits = {period: quota[("tokens", period)] for period in PERIODS
                  if quota.get(("tokens", period)) is not None}
        if not limits:
            return None
        now = self._now()
        hold_id = secrets.token_hex(8)
        with self._lock(key_id):
            holds = self._live_holds(key_id)
            held = sum(tokens for tokens, _ in holds.values())
            rooms = {period: limit - (self.store.get(self._totals_key(key_id, now, period))
                                      or {}).get("tokens", 0)
                     for period, limit in limits.items()}
            period = min(rooms, key=rooms.get)
            room = rooms[period] - held
            if prompt_tokens > room:
                if prompt_tokens <= rooms[period]:
                    raise RateLimited("this key's remaining token quota is held by its answers in "
                                      "flight; retry when they end", "quota_exhausted",
                                      retry_after=HELD_RETRY)
                raise _exhausted("tokens", period, limits[period], now)
            holds[hold_id] = [prompt_tokens + min(COMPLETION_RESERVE, room - prompt_tokens),
                              self._clock() + self.hold_ttl]
            self._keep_holds(key_id, holds)
        return hold_id

    def drop_hold(self, key_id: str, hold_id: str) -> None:
        """Give back a hold whose answer never completed (nothing is counted for it)."""
        with self._lock(key_id):
            holds = self._live_holds(key_id)
            if holds.pop(hold_id, None) is not None:
                self._keep_holds(key_id, holds)

    def lease(self, policy: KeyPolicy, ttl: float) -> str | None:
        """Take one of the key's `concurrency` slots for up to `ttl` seconds; its id to release.

        :raise RateLimited: 429 concurrency_limited (Retry-After: 1) when all are taken.
        """
        if policy.concurrency is None:
            return None
        name = f"{PREFIX}lease:{policy.id}"
        lease_id = secrets.token_hex(8)
        with self._lock(policy.id):
            now = self._clock()
            live = {lid: until for lid, until in (self.store.get(name) or {}).items()
                    if until > now}
            if len(live) >= policy.concurrency:
                raise RateLimited(f"this key may run at most {policy.concurrency} requests at "
                                  "once; wait for one to finish", "concurrency_limited",
                                  retry_after=1)
            live[lease_id] = now + ttl
            self.store.set(name, live, expire=ttl)
        return lease_id

    def release(self, key_id: str, lease_id: str) -> None:
        """Give back a slot taken by `lease`."""
        name = f"{PREFIX}lease:{key_id}"
        with self._lock(key_id):
            live = self.store.get(name) or {}
            if live.pop(lease_id, None) is not None:
                longest = max(live.values(), default=0) - self._clock()
                self.store.set(name, live, expire=longest if longest > 0 else 0)

    def in_flight(self, key_id: str) -> int:
        now = self._clock()
        return sum(1 for until in (self.store.get(f"{PREFIX}lease:{key_id}") or {}).values()
                   if until > now)

    # --- settling ------------------------------------------------------------------------------
    def record(self, key_id: str, model: str, backend: str, prompt_tokens: int,
               completion_tokens: int, *, requests: int = 1, hold: str | None = None) -> None:
        """Add an answered request to the key's ledger and its tokens to its quota totals,
        replacing its token `hold` if it had one. `requests=0` adds the tokens of a second
        answer given for the same request (a structured-output retry) without counting it
        again."""
        now = self._now()
        day = period_name(now, "day")
        self._records.submit(_Answer(key_id, now, f"{model}|{backend}", requests, prompt_tokens,
                                     completion_tokens, hold))
        if (day, key_id) not in self._days_listed:  # once a day per process is enough
            self.store.merge(f"{PREFIX}days:{day}", {key_id: 1}, expire=self.retention)
            if len(self._days_listed) > 10000:
                self._days_listed.clear()
            self._days_listed.add((day, key_id))
        if self.metrics_per_key:
            KEY_REQUESTS.labels(key_id).inc(requests)
            KEY_TOKENS.labels(key_id, "prompt").inc(prompt_tokens)
            KEY_TOKENS.labels(key_id, "completion").inc(completion_tokens)

    def _write_records(self, settled: list[Queued]) -> None:
        """Add settled answers to their keys' ledgers and totals: per key and day, one hold of
        the key's lock and one write of each record (a failure fails that group only)."""
        groups: dict[tuple[str, str], list[Queued]] = {}
        for entry in settled:
            answer = entry.item
            groups.setdefault((answer.key_id, period_name(answer.moment, "day")),
                              []).append(entry)
        for (key_id, day), group in groups.items():
            answers = [entry.item for entry in group]
            try:
                self._add_answers(key_id, day, answers)
            except Exception as exc:
                for entry in group:
                    entry.error = exc

    def _add_answers(self, key_id: str, day: str, answers: list[_Answer]) -> None:
        """Add settled answers to the key's ledger and totals: one atomic update of the three
        records. Answers without token holds need no lock (the records are only ever changed
        by atomic updates); answers that held tokens also give their holds back, under the
        key's lock, as every change of holds is made."""
        holds_settled = [answer.hold for answer in answers if answer.hold is not None]
        if not holds_settled:
            self._write_answers(key_id, day, answers)
            return
        with self._lock(key_id):
            self._write_answers(key_id, day, answers)
            holds = self._live_holds(key_id)
            if sum(holds.pop(hold, None) is not None for hold in holds_settled):
                self._keep_holds(key_id, holds)

    def _write_answers(self, key_id: str, day: str, answers: list[_Answer]) -> None:
        moment = answers[0].moment
        tokens = sum(answer.prompt_tokens + answer.completion_tokens for answer in answers)

        def change(values: list) -> list:
            ledger = dict(values[0] or {})
            for answer in answers:
                counts = ledger.get(answer.row) or {}
                ledger[answer.row] = {
                    "requests": counts.get("requests", 0) + answer.requests,
                    "prompt_tokens": counts.get("prompt_tokens", 0) + answer.prompt_tokens,
                    "completion_tokens": (counts.get("completion_tokens", 0)
                                          + answer.completion_tokens)}
            return [(ledger, self.retention),
                    *(_totals_added(value, moment, period, 0, tokens)
                      for value, period in zip(values[1:], PERIODS, strict=True))]

        self.store.update([f"{PREFIX}ledger:{key_id}:{day}",
                           *(self._totals_key(key_id, moment, period) for period in PERIODS)],
                          change)

    # --- reading -------------------------------------------------------------------------------
    def status(self, policy: KeyPolicy | None, key_id: str) -> dict:
        """Used and remaining quota of the current day and month, with their resets, and the
        tokens held for answers in flight."""
        now = self._now()
        held = sum(tokens for tokens, _ in self._live_holds(key_id).values())
        report = {}
        for period in PERIODS:
            used = self._used(key_id, now, period)
            entry: dict = {"period": period_name(now, period),
                           "resets_at": period_reset(now, period).strftime("%Y-%m-%dT%H:%M:%SZ")}
            for kind in QUOTA_KINDS:
                limit = policy.quota.get((kind, period)) if policy else None
                entry[kind] = {"used": used.get(kind, 0), "limit": limit,
                               "remaining": None if limit is None
                               else max(0, limit - used.get(kind, 0))}
            # Tokens held for answers in flight (their real count replaces them at the end).
            entry["tokens"]["held"] = held
            report[period] = entry
        return report

    def rows(self, first: date, last: date, key_id: str | None = None) -> list[dict]:
        """Ledger rows from day `first` to `last` (at most the retention), for one key or all."""
        rows = []
        day = first
        while day <= last:
            name = day.strftime("%Y-%m-%d")
            keys = [key_id] if key_id else sorted(self.store.get(f"{PREFIX}days:{name}") or {})
            for key in keys:
                for row, counts in sorted((self.store.get(f"{PREFIX}ledger:{key}:{name}")
                                           or {}).items()):
                    model, _, backend = row.rpartition("|")
                    rows.append({"day": name, "key": key, "model": model, "backend": backend,
                                 **{field: counts.get(field, 0) for field in
                                    ("requests", "prompt_tokens", "completion_tokens")}})
            day += timedelta(days=1)
        return rows


def _totals_added(current, moment: datetime, period: str, requests: int,
                  tokens: int) -> tuple[dict, float]:
    """The totals record `current` (or none) with `requests` and `tokens` added, and its expiry:
    a day after the period's end."""
    current = current if isinstance(current, dict) else {}
    expire = (period_reset(moment, period) - moment).total_seconds() + 86400
    return ({"requests": current.get("requests", 0) + requests,
             "tokens": current.get("tokens", 0) + tokens}, expire)


def _exhausted(kind: str, period: str, limit: int, now: datetime) -> RateLimited:
    wait = math.ceil((period_reset(now, period) - now).total_seconds())
    return RateLimited(f"this key's quota of {limit} {kind} per {period} is used up; it resets "
                       f"at {period_reset(now, period):%Y-%m-%dT%H:%M:%SZ}", "quota_exhausted",
                       retry_after=wait, headers=NO_RETRY if wait > SDK_RETRY_WAIT else None)
