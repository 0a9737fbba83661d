"""Model discovery: GET {base_url}/models for each key, at start and every RELAY_MODEL_DISCOVERY
seconds, in one background thread per process; never on a request's path.

The lists land in the Store (relay:v1:models:<upstream>:<key>, kept twice the period), where the
router reads them. A `hit` on a per-key counter lets only one process of one instance refresh a
key per period. A failed refresh keeps the previous list.
"""
from __future__ import annotations

import json
import logging
import threading

from ..store import Store
from .plan import RelayPlan
from .routing import models_key
from .wire import Exchange, TransportFailure

log = logging.getLogger(__name__)
MAX_LIST_BYTES = 4 * 1024 * 1024


def fetch_models(upstream, key, *, connect_timeout: float, timeout: float) -> list[str] | None:
    """The model ids `key` lists at its upstream, or None on any failure."""
    headers = [*upstream.headers]
    if key.secret:
        headers.append(("Authorization", f"Bearer {key.secret}"))
    try:
        with Exchange("GET", upstream.base_url + "/models", body=None, headers=headers,
                      proxy=upstream.proxy, connect_timeout=connect_timeout,
                      total_timeout=timeout) as exchange:
            if not exchange.wait_head(timeout) or exchange.status != 200:
                return None
            data = json.loads(exchange.read_all(MAX_LIST_BYTES, timeout))
    except (TransportFailure, ValueError, UnicodeDecodeError):
        return None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return None
    return [str(item["id"]) for item in items if isinstance(item, dict) and item.get("id")]


def refresh(plan: RelayPlan, store: Store, period: float, *, connect_timeout: float = 10.0,
            force: bool = False) -> int:
    """Refresh every discovering key whose turn it is; the number of lists stored."""
    stored = 0
    for upstream in plan.upstreams.values():
        if upstream.models != "discover":
            continue
        for key in upstream.keys:
            if key.models is not None:
                continue
            turn, _ = store.hit(f"relay:v1:discovery:{upstream.name}:{key.id}", period)
            if turn != 1 and not force:
                continue
            names = fetch_models(upstream, key, connect_timeout=connect_timeout, timeout=30)
            if names is None:
                log.warning("model discovery failed for upstream %s key %s", upstream.name,
                            key.id)
                continue
            store.set(models_key(upstream.name, key.id), names, expire=2 * period)
            stored += 1
    return stored


class Discovery:
    """The background refresher of one process (a daemon thread; `stop()` for tests)."""

    def __init__(self, plan: RelayPlan, store: Store, period: float, connect_timeout: float):
        self.plan, self.store, self.period = plan, store, period
        self.connect_timeout = connect_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="relay-discovery", daemon=True)

    def start(self) -> Discovery:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                refresh(self.plan, self.store, self.period, connect_timeout=self.connect_timeout)
            except Exception as exc:  # a store outage must not end discovery for good
                log.warning("model discovery round failed (%s)", type(exc).__name__)
            self._stop.wait(min(self.period, 60.0))

    def stop(self) -> None:
        self._stop.set()
