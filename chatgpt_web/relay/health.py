"""Health of each upstream key, kept in the Store so every worker and instance agrees.

    healthy --429--------------------> cooling until Retry-After / reset headers
    healthy --401/403, quota---------> disabled; after RELAY_RECHECK one request may try it
                                       (half-open): success heals it, failure disables it again
    healthy --5xx, connect, broken---> soft strike; SOFT_STRIKES of them within STRIKE_WINDOW
                                       cool the key: 10 s, then 20 s, 40 s ... (at most 10 min)
                                       for cool-downs in a row; a success forgets both
    model_not_found on a key --------> that model is denied on that key for an hour

Records are changed with the Store's atomic `merge` (only the fields that change), strikes are
counted with its atomic `hit`, and the single half-open trial is claimed with `hit` too, so two
processes cannot both take it. A record holds an error code, never an upstream message.

Each process keeps what it read for STATE_CACHE_SECONDS (one Store read saved per request): a
change this process records is seen at once, another process's within that time (meanwhile a key
another process just disabled may be tried once more, and fail over).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..store import Store
from . import outcomes

PREFIX = "relay:v1:"
SOFT_STRIKES = 3
STRIKE_WINDOW = 60.0
SOFT_COOLDOWN = 10.0
MAX_SOFT_COOLDOWN = 600.0
MODEL_DENIAL = 3600.0
DEFAULT_RATE_REST = 10.0
HEALTHY = {"status": "healthy", "until": 0, "reason": None}
STATE_CACHE_SECONDS = 1.0


def _id(upstream: str, key: str) -> str:
    return f"{upstream}:{key}"


def _is_clean(state: dict | None) -> bool:
    """True for the record of a healthy key with no strike or cool-down to forget."""
    return state is not None and state.get("status") == "healthy" \
        and not state.get("strikes") and not state.get("cooldowns")


class KeyHealth:
    """Reads and records the health of (upstream, key) pairs."""

    def __init__(self, store: Store, recheck: float, clock: Callable[[], float] = time.time,
                 cache_seconds: float = STATE_CACHE_SECONDS):
        self.store = store
        self.recheck = recheck
        self._clock = clock
        self.cache_seconds = cache_seconds
        self._cached: dict[str, tuple[float, dict]] = {}  # ident -> (good until, state)
        self._changes = 0  # bumped by every change this process makes
        self._lock = threading.Lock()

    def state(self, upstream: str, key: str, *, fresh: bool = False) -> dict:
        """The key's record (read from the Store at most once per cache_seconds, unless
        `fresh`: for a change made from it)."""
        ident = _id(upstream, key)
        now = time.monotonic()
        cached = self._cached.get(ident)
        if cached is not None and cached[0] > now and not fresh:
            return cached[1]
        changes = self._changes
        stored = self.store.get(PREFIX + "key:" + ident)
        state = {**HEALTHY, **(stored if isinstance(stored, dict) else {})}
        with self._lock:
            if changes == self._changes:  # no change of ours raced with this read
                self._cached[ident] = (now + self.cache_seconds, state)
        return state

    def _changed(self, ident: str) -> None:
        """Forget what was read of `ident` (after this process changed its record)."""
        with self._lock:
            self._changes += 1
            self._cached.pop(ident, None)

    def usable(self, upstream: str, key: str, model: str | None) -> tuple[bool, dict]:
        """(may this key be tried now for `model`, its state). Takes the half-open trial of a
        disabled key whose recheck time has come, so only one request gets it."""
        state = self.state(upstream, key)
        now = self._clock()
        if model and state.get("denied", {}).get(model, 0) > now:
            return False, state
        if state["status"] == "healthy":
            return True, state
        if state["until"] > now:
            return False, state
        if state["status"] == "disabled":
            # One trial per disabled period: the counter is named after the period's end.
            trials, _ = self.store.hit(f"{PREFIX}trial:{_id(upstream, key)}:{state['until']}",
                                       self.recheck)
            return trials == 1, state
        return True, state  # a cooling that is over

    def record(self, upstream: str, key: str, outcome: outcomes.Outcome,
               model: str | None = None, state: dict | None = None) -> None:
        """Apply what an attempt's outcome says about the key."""
        if outcome.kind in (outcomes.OK, outcomes.CLIENT) and _is_clean(state):
            # A healthy key that served again: nothing changes, so what this process read of it
            # stays good (forgetting it here made every request after an answer read the Store).
            return
        try:
            self._record(upstream, key, outcome, model, state)
        finally:
            self._changed(_id(upstream, key))

    def _record(self, upstream: str, key: str, outcome: outcomes.Outcome,
                model: str | None, state: dict | None) -> None:
        ident = _id(upstream, key)
        now = self._clock()
        record_key = PREFIX + "key:" + ident
        if outcome.kind in (outcomes.OK, outcomes.CLIENT):  # the key was accepted
            if not _is_clean(state):
                self.store.delete(PREFIX + "strikes:" + ident)
                self.store.merge(record_key, {"status": "healthy", "until": 0, "reason": None,
                                              "strikes": 0, "cooldowns": 0})
        elif outcome.kind == outcomes.RATE:
            rest = outcome.retry_after if outcome.retry_after is not None else DEFAULT_RATE_REST
            self.store.merge(record_key, {"status": "cooling", "until": now + rest,
                                          "reason": "rate_limited"})
        elif outcome.kind == outcomes.DISABLE:
            self.store.merge(record_key, {"status": "disabled", "until": now + self.recheck,
                                          "reason": outcome.reason or "refused"})
        elif outcome.kind == outcomes.MODEL and model:
            denied = {m: t for m, t in self.state(upstream, key, fresh=True).get("denied",
                                                                                  {}).items()
                      if t > now}
            denied[model] = now + MODEL_DENIAL
            self.store.merge(record_key, {"denied": denied})
        elif outcome.kind == outcomes.SOFT:
            reason = outcome.error.code if outcome.error else "upstream_error"
            strikes, _ = self.store.hit(PREFIX + "strikes:" + ident, STRIKE_WINDOW)
            if strikes < SOFT_STRIKES:
                self.store.merge(record_key, {"strikes": strikes, "reason": reason})
                return
            # Enough strikes: cool down, longer for each cool-down in a row; the strike window
            # starts over.
            self.store.delete(PREFIX + "strikes:" + ident)
            cooldowns = int(self.state(upstream, key, fresh=True).get("cooldowns", 0))
            rest = min(SOFT_COOLDOWN * 2 ** cooldowns, MAX_SOFT_COOLDOWN)
            self.store.merge(record_key, {"status": "cooling", "until": now + rest,
                                          "reason": reason, "strikes": strikes,
                                          "cooldowns": cooldowns + 1})

    def report(self, upstream: str, key: str) -> dict:
        """The key's state for /admin/upstreams: status, until, reason code; never the key."""
        state = self.state(upstream, key)
        now = self._clock()
        status = state["status"]
        if status != "healthy" and state["until"] <= now:
            status = "half-open" if status == "disabled" else "healthy"
        return {"status": status, "until": state["until"] if state["until"] > now else None,
                "reason": state.get("reason"), "strikes": state.get("strikes", 0),
                "denied_models": sorted(m for m, t in state.get("denied", {}).items() if t > now)}
