"""Rate limits per client key and per client IP, counted in the shared Store.

RATE_LIMIT applies to each client key (when API keys are on), RATE_LIMIT_IP to each client IP;
both default to 120 requests per hour, as chatanywhere's free API had. Counters live in the Store
(diskcache shared by the worker processes, or Redis shared by every instance), so the limit holds
however many processes serve.

Two strategies (RATE_LIMIT_STRATEGY):
  fixed    count per aligned window (the hour 10:00-11:00); simple, but allows a burst of twice
           the limit across a window edge.
  sliding  the weighted window counter: previous window's count x the share of it still inside
           the sliding window, plus the current window's count. No edge burst; two counters.

Which requests count (issue 13): a limit the operator set applies to every request; the default
limits (Rate.pooled_only) only to requests served by the server's account pool, so that a
personal deployment whose callers bring their own ChatGPT credentials never refuses them.
`check(..., pooled=False)` counts the limits of every request, `check(..., pooled=True)` the
default ones once a request turns out to use the pool. IPv6 clients are counted per address,
or per network of RATE_LIMIT_IPV6_PREFIX bits. Refused authentications are counted per IP
apart (`auth_refused`, `auth_blocked`): past AUTH_FAILURE_LIMIT the guard answers 429 before
it compares any key. RateLimit-Remaining rounds the sliding estimate up, so it never promises
a request that would be refused.

The limiter decides and knows nothing of the web: `check()` returns the tightest decision, whose
`headers_for()` (RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset in seconds) access.py puts
on the answer; a refused request raises 429 `rate_limited` with Retry-After. Refused requests
count too, so a client that ignores Retry-After stays refused.

Counting is a group commit (group_commit.py): the hits that the threads of a process bring while
one Store transaction runs are counted together by the next, one Store.hit per counter, and each
request gets the count it would have got alone, in queue order; a burst of N requests costs a
few transactions instead of N, with the same decisions.
"""
from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

from .config import UNITS, Rate
from .errors import RateLimited
from .group_commit import GroupCommit, Queued
from .store import Store

PREFIX = "limit:v1:"


@dataclass(frozen=True)
class Decision:
    """The state of one limit after counting a request."""

    limit: int
    remaining: int
    reset: int  # seconds until the current window ends
    retry_after: int | None  # set when the request is refused

    @property
    def allowed(self) -> bool:
        return self.retry_after is None


class _Hit(NamedTuple):
    """One request's hit of counter `key`; with `previous_key`, that counter is read as well (the
    previous window's, which the sliding estimate needs)."""

    key: str
    window: int
    previous_key: str | None


def _count_hits(store: Store, batch: list[Queued]) -> None:
    """Count the queued hits: one Store.hit(amount=n) per counter, whose result n - 1, ..., 0
    hits before the end is each one's count, exactly as if each had been counted in its own
    transaction in queue order. Each entry's result: (count, previous window's count)."""
    groups: dict[tuple[str, int], list[Queued]] = {}
    for entry in batch:
        groups.setdefault((entry.item.key, entry.item.window), []).append(entry)
    for (key, window), group in groups.items():
        try:
            total, _ = store.hit(key, 2 * window, amount=len(group))
            previous_key = group[0].item.previous_key
            previous = (store.get(previous_key) or 0) if previous_key else 0
        except Exception as error:  # noqa: BLE001 - raised by each caller of the group
            for entry in group:
                entry.error = error
        else:
            for position, entry in enumerate(group):
                entry.result = (total - len(group) + 1 + position, previous)


class RateLimiter:
    """Counts requests per client key and per client IP and refuses those over the limit."""

    def __init__(self, store: Store, *, per_key: Rate | None, per_ip: Rate | None,
                 strategy: str = "sliding", clock: Callable[[], float] = time.time,
                 ipv6_prefix: int = 128, auth_failures: Rate | None = None):
        self.store = store
        self.per_key = per_key
        self.per_ip = per_ip
        self.strategy = strategy
        self.ipv6_prefix = ipv6_prefix
        self.auth_failures = auth_failures
        self._clock = clock
        self._hits = GroupCommit(partial(_count_hits, store))

    def ip_subject(self, ip: str) -> str:
        """The counter name of a client address: normalised (an IPv4-mapped IPv6 address is its
        IPv4 address; IPv6 cut to `ipv6_prefix` bits) and hashed, since counters need no readable
        addresses of people."""
        try:
            address = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            normal = ip
        else:
            if address.version == 6 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if address.version == 6:
                normal = str(ipaddress.ip_network(f"{address}/{self.ipv6_prefix}", strict=False))
            else:
                normal = str(address)
        return "ip:" + hashlib.sha256(normal.encode()).hexdigest()[:16]

    def check(self, key_id: str | None, ip: str, *, pooled: bool = False,
              key_rate: Rate | None = None) -> Decision | None:
        """Count one request of `key_id` (None when keys are off) from `ip`: the limits that
        apply to every request, or with `pooled` the default ones that apply to pooled requests.
        `key_rate` (a scoped key's own `rate`) replaces RATE_LIMIT for that key: counted with the
        limits of every request, never again as a pooled one.

        Returns the tightest decision (for the RateLimit-* headers), None when no limit applies.
        :raise RateLimited: 429 with Retry-After (and the headers) when a limit is exceeded.
        """
        decisions = []  # (scope, rate, decision)
        per_key, per_ip = (rate if rate is not None and rate.pooled_only == pooled else None
                           for rate in (self.per_key, self.per_ip))
        if key_rate is not None:
            per_key = None if pooled else key_rate
        if per_key is not None and key_id is not None:
            decisions.append(("client key", per_key, self.count(f"key:{key_id}", per_key)))
        if per_ip is not None:
            decisions.append(("IP address", per_ip, self.count(self.ip_subject(ip), per_ip)))
        if not decisions:
            return None
        refused = [item for item in decisions if not item[2].allowed]
        scope, rate, tightest = (max(refused, key=lambda item: item[2].retry_after) if refused
                                 else min(decisions, key=lambda item: item[2].remaining))
        if refused:
            raise RateLimited(f"rate limit exceeded: at most {tightest.limit} requests per "
                              f"{_window_name(rate.window)} per {scope}",
                              "rate_limited", retry_after=tightest.retry_after,
                              headers=headers_for(tightest))
        return tightest

    def count(self, subject: str, rate: Rate) -> Decision:
        """Count one hit of `subject` under `rate` and decide."""
        now = self._clock()
        window = rate.window
        index = int(now // window)
        elapsed = now - index * window
        base = f"{PREFIX}{subject}:{window}:"
        # Kept two windows: the sliding estimate reads the previous one.
        sliding = self.strategy != "fixed"
        current, previous = self._hits.submit(
            _Hit(f"{base}{index}", window, f"{base}{index - 1}" if sliding else None)).result
        to_window_end = window - elapsed
        if not sliding:
            used = current
            retry = math.ceil(to_window_end) if current > rate.requests else None
        else:
            weight = 1 - elapsed / window
            # Rounded up: with 9.5 of 10 used, one more request would make 10.5 and be refused,
            # so none remains (rounding down promised one).
            used = math.ceil(previous * weight + current - 1e-9)
            retry = (_sliding_wait(previous, current, rate.requests, elapsed, window)
                     if previous * weight + current > rate.requests else None)
        return Decision(rate.requests, max(0, rate.requests - used),
                        max(1, math.ceil(to_window_end)), retry and max(1, retry))


    # --- refused authentications ------------------------------------------------------------
    def auth_blocked(self, ip: str) -> int | None:
        """Seconds `ip` must wait before its keys are compared again, or None. Counts nothing."""
        rate = self.auth_failures
        if rate is None:
            return None
        now = self._clock()
        index = int(now // rate.window)
        base = f"{PREFIX}auth:{self.ip_subject(ip)}:{rate.window}:"
        current = self.store.get(f"{base}{index}") or 0
        if current >= rate.requests:
            return max(1, math.ceil((index + 1) * rate.window - now))
        return None

    def auth_refused(self, ip: str) -> None:
        """Count one refused authentication of `ip` (a fixed window: what matters is the count)."""
        rate = self.auth_failures
        if rate is not None:
            index = int(self._clock() // rate.window)
            self.store.hit(f"{PREFIX}auth:{self.ip_subject(ip)}:{rate.window}:{index}",
                           2 * rate.window)


def _sliding_wait(previous: int, current: int, limit: int, elapsed: float, window: int) -> int:
    """Seconds until one more request fits under the sliding estimate."""
    room = limit - 1  # the retried request itself must fit
    if current <= room and previous > 0:
        # previous x (1 - (elapsed + wait) / window) + current <= room, within this window
        return math.ceil(window * (1 - (room - current) / previous) - elapsed)
    # In the next window the current count becomes the previous one.
    next_part = window * (1 - room / current) if current > 0 else 0
    return math.ceil((window - elapsed) + max(0.0, next_part))


def _window_name(seconds: int) -> str:
    return {value: name for name, value in UNITS.items()}.get(seconds, f"{seconds} s")


def headers_for(decision: Decision) -> dict[str, str]:
    """RateLimit-* headers of `decision`."""
    return {"RateLimit-Limit": str(decision.limit),
            "RateLimit-Remaining": str(decision.remaining),
            "RateLimit-Reset": str(decision.reset)}
