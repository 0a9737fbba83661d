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

The limiter decides and knows nothing of the web: `check()` returns the tightest decision, whose
`headers_for()` (RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset in seconds) access.py puts
on the answer; a refused request raises 429 `rate_limited` with Retry-After. Refused requests
count too, so a client that ignores Retry-After stays refused.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .config import UNITS, Rate
from .errors import RateLimited
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


class RateLimiter:
    """Counts requests per client key and per client IP and refuses those over the limit."""

    def __init__(self, store: Store, *, per_key: Rate | None, per_ip: Rate | None,
                 strategy: str = "sliding", clock: Callable[[], float] = time.time):
        self.store = store
        self.per_key = per_key
        self.per_ip = per_ip
        self.strategy = strategy
        self._clock = clock

    def check(self, key_id: str | None, ip: str) -> Decision | None:
        """Count one request of `key_id` (None when keys are off) from `ip`.

        Returns the tightest decision (for the RateLimit-* headers), None when no limit applies.
        :raise RateLimited: 429 with Retry-After (and the headers) when a limit is exceeded.
        """
        decisions = []  # (scope, rate, decision)
        if self.per_key is not None and key_id is not None:
            decisions.append(("client key", self.per_key,
                              self.count(f"key:{key_id}", self.per_key)))
        if self.per_ip is not None:
            # The IP is hashed: counters need no readable addresses of people.
            ip_id = hashlib.sha256(ip.encode()).hexdigest()[:16]
            decisions.append(("IP address", self.per_ip, self.count(f"ip:{ip_id}", self.per_ip)))
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
        current, _ = self.store.hit(f"{base}{index}", 2 * window)
        to_window_end = window - elapsed
        if self.strategy == "fixed":
            used = current
            retry = math.ceil(to_window_end) if current > rate.requests else None
        else:
            previous = self.store.get(f"{base}{index - 1}") or 0
            weight = 1 - elapsed / window
            used = math.floor(previous * weight + current)
            retry = (_sliding_wait(previous, current, rate.requests, elapsed, window)
                     if previous * weight + current > rate.requests else None)
        return Decision(rate.requests, max(0, rate.requests - used),
                        max(1, math.ceil(to_window_end)), retry and max(1, retry))


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
