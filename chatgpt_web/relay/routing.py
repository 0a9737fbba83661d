"""Which upstream keys may serve a public model name, and in what order.

A model's targets come from its route in UPSTREAMS_FILE (aliases and wildcards resolved by the
plan), else from model discovery: a model an upstream lists is served there under its own name
(`unlisted_models: "discovered"`), beside the web pool when the web backend knows it too
(ROUTE_PREFERENCE decides which goes first). Order: lower `priority` first; inside one priority,
targets in a weighted random order; inside a target, its usable keys in a weighted random order.
Each key is checked (health.py) only when its turn comes, so a request that the first key serves
reads one health record.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ..store import Store
from .health import PREFIX, KeyHealth
from .plan import WEB, RelayPlan, Target, Upstream, UpstreamKey


@dataclass(frozen=True)
class Attempt:
    """One try: an upstream key, and the model name to send it."""

    upstream: Upstream
    key: UpstreamKey
    model: str
    state: dict


def weighted_order(items: list, weights: list[float], rng: random.Random) -> list:
    """`items` in a random order where heavier items tend to come first (weighted sampling
    without replacement: each item's key is u ** (1 / weight))."""
    keyed = [(rng.random() ** (1.0 / w), index) for index, w in enumerate(weights)]
    return [items[index] for _, index in sorted(keyed, reverse=True)]


def models_key(upstream: str, key: str) -> str:
    return f"{PREFIX}models:{upstream}:{key}"


class Router:
    """Resolves models to targets and targets to usable keys."""

    def __init__(self, plan: RelayPlan, store: Store, health: KeyHealth, *,
                 route_preference: str = "web", rng: random.Random | None = None):
        self.plan = plan
        self.store = store
        self.health = health
        self.route_preference = route_preference
        self._rng = rng or random.Random()

    def discovered(self, upstream: Upstream, key: UpstreamKey) -> tuple[str, ...] | None:
        """Models `key` may use: configured (key, then upstream) or discovered; None: unknown."""
        if key.models is not None:
            return key.models
        if upstream.models != "discover":
            return upstream.models
        listed = self.store.get(models_key(upstream.name, key.id))
        return tuple(listed) if isinstance(listed, list) else None

    def upstream_models(self, upstream: Upstream) -> set[str]:
        names: set[str] = set()
        for key in upstream.keys:
            names.update(self.discovered(upstream, key) or ())
        return names

    def targets(self, model: str, *, web_knows: bool = False) -> tuple[Target, ...] | None:
        """The targets of public `model`, or None when the relay does not serve it."""
        routed = self.plan.route(model)
        if routed is not None:
            return routed
        if self.plan.unlisted_models != "discovered":
            return None
        found = [Target(up.name) for up in self.plan.upstreams.values()
                 if model in self.upstream_models(up)]
        if not found:
            return None
        if web_knows:
            web = Target(WEB, priority=0 if self.route_preference == "web" else 1)
            found = [Target(t.to, priority=0 if self.route_preference == "relay" else 1)
                     for t in found] + [web]
        return tuple(found)

    def ordered(self, targets: tuple[Target, ...]) -> list[Target]:
        """Targets in try order: by priority, weighted random inside a priority."""
        ordered: list[Target] = []
        for priority in sorted({t.priority for t in targets}):
            tier = [t for t in targets if t.priority == priority]
            ordered += weighted_order(tier, [t.weight for t in tier], self._rng)
        return ordered

    def attempts(self, model: str, targets: list[Target]) -> Iterator[Attempt]:
        """Usable keys of the relay targets, in try order (web targets are skipped)."""
        canonical = self.plan.canonical(model)
        for target in targets:
            if target.is_web:
                continue
            upstream = self.plan.upstreams[target.to]
            upstream_model = target.model or canonical
            keys = weighted_order(list(upstream.keys), [k.weight for k in upstream.keys],
                                  self._rng)
            for key in keys:
                served = self.discovered(upstream, key)
                # An explicit route needs no discovery; a key-level model list still applies.
                if key.models is not None and upstream_model not in key.models:
                    continue
                if served is not None and key.models is None and target.model is None \
                        and self.plan.route(model) is None and upstream_model not in served:
                    continue
                usable, state = self.health.usable(upstream.name, key.id, upstream_model)
                if usable:
                    yield Attempt(upstream, key, upstream_model, state)

    def blocked_until(self, targets: list[Target],
                      model: str) -> tuple[float | None, bool, bool]:
        """(earliest time a key of these targets may serve again, True if all are disabled,
        True if one rests for a rate limit)."""
        earliest, all_disabled, rate = None, True, False
        for target in targets:
            if target.is_web:
                continue
            for key in self.plan.upstreams[target.to].keys:
                state = self.health.state(target.to, key.id)
                if state["status"] != "disabled":
                    all_disabled = False
                rate = rate or state.get("reason") == "rate_limited"
                if state["until"]:
                    earliest = state["until"] if earliest is None else min(earliest,
                                                                           state["until"])
        return earliest, all_disabled, rate

    def public_models(self) -> list[str]:
        """Every public name the relay serves: routes (not wildcards), aliases, discovered."""
        names = [name for name in self.plan.routes if name not in self.plan.wildcards]
        names += list(self.plan.aliases)
        if self.plan.unlisted_models == "discovered":
            for upstream in self.plan.upstreams.values():
                names += sorted(self.upstream_models(upstream))
        return list(dict.fromkeys(names))
