"""The relay's long-lived parts for one app, built once from the Config and the Store."""
from __future__ import annotations

import json
import threading

from ..config import Config
from ..errors import NotFound
from ..store import Store
from .discovery import Discovery
from .forward import Relay, RelayRequest, Timeouts
from .health import KeyHealth
from .plan import RelayPlan
from .routing import Router
from .scrub import Scrubber


class RelayService:
    """Router, key health, the forwarding loop, and model discovery (started on first use)."""

    def __init__(self, config: Config, plan: RelayPlan, store: Store):
        self.plan = plan
        self.config = config
        self.health = KeyHealth(store, config.relay_recheck)
        self.router = Router(plan, store, self.health, route_preference=config.route_preference)
        self.scrubber = Scrubber.for_plan(plan)
        self.relay = Relay(self.router, self.scrubber, Timeouts(
            connect=config.relay_connect_timeout, commit_after=config.relay_commit_after,
            ping=config.relay_ping_interval, idle=config.relay_idle_timeout,
            total=config.relay_total_timeout), max_attempts=config.relay_max_attempts,
            ca_directory=config.ca_dir)
        self._store = store
        self._discovery: Discovery | None = None
        self._lock = threading.Lock()

    def ensure_discovery(self) -> None:
        """Start the background model discovery of this process, once."""
        if self._discovery is not None or not self.config.relay_model_discovery:
            return
        if not any(up.models == "discover" for up in self.plan.upstreams.values()):
            return
        with self._lock:
            if self._discovery is None:
                self._discovery = Discovery(self.plan, self._store,
                                            self.config.relay_model_discovery,
                                            self.config.relay_connect_timeout).start()

    def call(self, path: str, body: dict, timeout: float) -> bytes:
        """POST `body` to `path` of the relay targets of its model, for the service itself (the
        moderation check): the answer's bytes. :raise ApiError: no target served in time."""
        model = body["model"]
        targets = self.router.targets(model)
        if targets is None or all(target.is_web for target in targets):
            raise NotFound(f"no relay upstream serves the model {model!r}", "model_not_found")
        ordered = self.router.ordered(targets)
        request = RelayRequest(path, json.dumps(body).encode(), "application/json", model,
                               json=body)
        return self.relay.forward(request, self.router.attempts(model, ordered), ordered,
                                  timeout=timeout).get_data()

    def report(self) -> list[dict]:
        """/admin/upstreams: one row per upstream key (by id) with its health; never a key."""
        rows = []
        for upstream in self.plan.upstreams.values():
            for key in upstream.keys:
                models = self.router.discovered(upstream, key)
                rows.append({"upstream": upstream.name, "key": key.id, "weight": key.weight,
                             **self.health.report(upstream.name, key.id),
                             "models": len(models) if models is not None else None})
        return rows
