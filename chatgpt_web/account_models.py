"""Which models each pooled account offers: its `GET /backend-api/models` list, kept in the Store.

A free account, a Plus account and a Team account list different slugs, and an account asked for
a model it does not offer answers with another one. The pool (pool.py) therefore prefers the
accounts whose list names the model asked for, and `/v1/models` shows a pool caller the union of
what the pool offers.

The lists are read lazily and never per request: an answer that ends on an account whose list is
missing or older than `ttl` (6 h) reads it once, with the token that answer already used; the
first of all workers and instances to claim the refresh (a Store `add`, kept `retry` seconds) does
it, so a models endpoint that fails costs one read per account per `retry` (5 min). A list too
old is still used until a fresh one replaces it. Records are `pool:v1:models:<account id>`:
{"slugs": [...], "at": unix time}; the account id is a label, never a credential.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from .errors import ApiError
from .models import slugs_of
from .store import Store

log = logging.getLogger(__name__)
PREFIX = "pool:v1:models:"
CLAIM_PREFIX = "pool:v1:models-claim:"
TTL = 6 * 3600
RETRY = 300
KEEP = 7 * 86400  # a list outlives its freshness; an account removed from the file is forgotten
MAX_SLUGS = 200   # a models answer is bounded by the history client; its list is bounded here


class AccountModels:
    """The model lists of pooled accounts, read through `fetch(access_token)` (the raw answer of
    GET /backend-api/models on the configured backend)."""

    def __init__(self, store: Store, fetch: Callable[[str], object], *, ttl: float = TTL,
                 retry: float = RETRY, clock: Callable[[], float] = time.time):
        self.store = store
        self._fetch = fetch
        self.ttl, self.retry, self._clock = ttl, retry, clock

    def _record(self, account_id: str) -> dict | None:
        record = self.store.get(PREFIX + account_id)
        if isinstance(record, dict) and isinstance(record.get("slugs"), list):
            return record
        return None

    def known(self, account_id: str) -> tuple[str, ...] | None:
        """The slugs the account listed last time, or None when its list was never read."""
        record = self._record(account_id)
        return None if record is None else tuple(record["slugs"])

    def offers(self, account_id: str, slug: str) -> bool | None:
        """True/False when the account's list is known (and says), None when it is not."""
        known = self.known(account_id)
        return None if known is None else slug in known

    def union(self, account_ids: Iterable[str]) -> tuple[str, ...]:
        """Every slug one of the accounts lists, in first-seen order."""
        slugs: dict[str, None] = {}
        for account_id in account_ids:
            slugs.update(dict.fromkeys(self.known(account_id) or ()))
        return tuple(slugs)

    def stale(self, account_id: str) -> bool:
        """True when the list was never read or is older than `ttl`."""
        record = self._record(account_id)
        return record is None or record.get("at", 0) + self.ttl <= self._clock()

    def refresh(self, account_id: str, access_token: Callable[[], str]) -> bool:
        """Read the account's list now if it is stale and no other worker claimed the read in
        the last `retry` seconds; True when a fresh list was stored. `access_token()` is asked
        only then. Failures are logged (the code only) and leave the old list in place."""
        if not self.stale(account_id):
            return False
        if not self.store.add(CLAIM_PREFIX + account_id, 1, expire=self.retry):
            return False
        try:
            slugs = slugs_of(self._fetch(access_token()))[:MAX_SLUGS]
        except ApiError as error:
            log.warning("model list of pooled account %s not read (%s)", account_id, error.code)
            return False
        if not slugs:
            log.warning("model list of pooled account %s is empty; kept the old one", account_id)
            return False
        self.store.set(PREFIX + account_id, {"slugs": list(slugs), "at": self._clock()},
                       expire=KEEP)
        return True
