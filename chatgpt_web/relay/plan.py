"""UPSTREAMS_FILE: the relay's upstreams, their keys, and the routes from public model names.

The file is read and checked once, at start-up (create_app calls `load_plan`); any mistake stops
the service with a ConfigError that names the entry but never quotes a secret. Secrets (keys and
header values) may be written as `env:NAME`, read from the environment mapping the Config was
built from. The shape, with every field, is documented in docs/relay.md.

A route's target is either the name of an upstream or `web` (the ChatGPT web account pool).
Public model names are exact names, aliases (`{"alias_of": "gpt-4o-mini"}`), or wildcards
(`"deepseek-*"`, matched with fnmatch after the exact names).
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..config import read_json_file
from ..errors import ConfigError

WEB = "web"
_UPSTREAM_FIELDS = {"name", "base_url", "keys", "models", "stream_usage", "headers",
                    "max_in_flight", "proxy"}
_KEY_FIELDS = {"id", "key", "weight", "models"}
_TARGET_FIELDS = {"to", "model", "priority", "weight"}
_MAX_ALIAS_DEPTH = 8


@dataclass(frozen=True)
class UpstreamKey:
    """One key of an upstream. `id` is a label safe to log and show; `secret` never leaves."""

    id: str
    secret: str = field(repr=False)
    weight: float = 1.0
    # Models this key may serve, when the operator says so; None: any the upstream lists.
    models: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Upstream:
    """An OpenAI-compatible API (base URL ends before the endpoint paths, usually in `/v1`)."""

    name: str
    base_url: str
    keys: tuple[UpstreamKey, ...]
    # "discover" (GET {base_url}/models periodically) or the fixed list of served models.
    models: str | tuple[str, ...] = "discover"
    # Ask this upstream for the usage chunk of streamed chat answers (stream_options.include_usage).
    stream_usage: bool = True
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    proxy: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Target:
    """Where a public model may be served: an upstream (or `web`), under which model name."""

    to: str
    model: str | None = None  # the name upstream; None: the public name
    priority: int = 0
    weight: float = 1.0

    @property
    def is_web(self) -> bool:
        return self.to == WEB


@dataclass(frozen=True)
class RelayPlan:
    """The parsed UPSTREAMS_FILE."""

    upstreams: dict[str, Upstream]
    routes: dict[str, tuple[Target, ...]]  # exact public names, then wildcard patterns
    aliases: dict[str, str]
    wildcards: tuple[str, ...] = ()
    # "discovered": every model an upstream lists is served under its own name; "none": only
    # the names of `models`.
    unlisted_models: str = "discovered"
    hide_upstreams: bool = True

    def secrets(self) -> list[str]:
        """Every configured secret (keys, header values), for the scrubber."""
        found = [key.secret for up in self.upstreams.values() for key in up.keys]
        found += [value for up in self.upstreams.values() for _, value in up.headers]
        found += [up.proxy for up in self.upstreams.values() if up.proxy]
        return [secret for secret in found if secret]

    def canonical(self, name: str) -> str:
        """`name` with its aliases followed to the routed name."""
        for _ in range(_MAX_ALIAS_DEPTH):
            if name not in self.aliases:
                return name
            name = self.aliases[name]
        return name

    def route(self, name: str) -> tuple[Target, ...] | None:
        """The configured targets of public model `name` (alias or wildcard), or None."""
        name = self.canonical(name)
        if name in self.routes:
            return self.routes[name]
        for pattern in self.wildcards:
            if fnmatch.fnmatchcase(name, pattern):
                return self.routes[pattern]
        return None


def _secret(value, where: str, environ: Mapping[str, str]) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    if value.startswith("env:"):
        name = value[4:]
        if not name or name not in environ:
            raise ConfigError(f"{where} refers to the environment variable {name or '(empty)'}, "
                              "which is not set")
        return environ[name]
    return value


def _positive(value, where: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where} must be a positive number")
    return float(value)


def _names(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of model names")
    return tuple(value)


def _unknown(entry: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ConfigError(f"{where} has unknown field(s): {', '.join(extra)}")


def _key(index: int, entry, upstream: str, environ) -> UpstreamKey:
    where = f"UPSTREAMS_FILE upstream {upstream!r} key {index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    _unknown(entry, _KEY_FIELDS, where)
    key_id = entry.get("id", str(index))
    if not isinstance(key_id, str) or not key_id or ":" in key_id:
        raise ConfigError(f"{where}: id must be a non-empty string without ':'")
    models = _names(entry["models"], f"{where} models") if "models" in entry else None
    return UpstreamKey(key_id, _secret(entry.get("key", ""), f"{where} key", environ),
                       _positive(entry.get("weight"), f"{where} weight", 1.0), models)


def _upstream(index: int, entry, environ) -> Upstream:
    where = f"UPSTREAMS_FILE upstream {index}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be an object")
    _unknown(entry, _UPSTREAM_FIELDS, where)
    name = entry.get("name")
    if not isinstance(name, str) or not name or name == WEB or ":" in name or "#" in name:
        raise ConfigError(f"{where}: name must be a non-empty string, not 'web', without ':'")
    where = f"UPSTREAMS_FILE upstream {name!r}"
    base_url = entry.get("base_url")
    if not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https") \
            or not urlsplit(base_url).hostname:
        raise ConfigError(f"{where}: base_url must be an http(s) URL")
    keys = entry.get("keys")
    if not isinstance(keys, list) or not keys:
        raise ConfigError(f"{where}: keys must be a non-empty list")
    parsed_keys = tuple(_key(i, key, name, environ) for i, key in enumerate(keys))
    if len({key.id for key in parsed_keys}) != len(parsed_keys):
        raise ConfigError(f"{where}: two keys have the same id")
    models = entry.get("models", "discover")
    if models != "discover":
        models = _names(models, f"{where} models")
    stream_usage = entry.get("stream_usage", True)
    if not isinstance(stream_usage, bool):
        raise ConfigError(f"{where}: stream_usage must be true or false")
    headers = entry.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}: headers must be an object")
    parsed_headers = tuple((str(k), _secret(v, f"{where} header {k}", environ))
                           for k, v in headers.items())
    proxy = entry.get("proxy")
    if proxy is not None:
        proxy = _secret(proxy, f"{where} proxy", environ) or None
    return Upstream(name, base_url.rstrip("/"), parsed_keys, models, stream_usage,
                    parsed_headers, proxy)


def _targets(name: str, entry, upstreams: dict) -> tuple[Target, ...]:
    where = f"UPSTREAMS_FILE model {name!r}"
    routes = entry.get("routes")
    if not isinstance(routes, list) or not routes:
        raise ConfigError(f"{where}: routes must be a non-empty list (or give alias_of)")
    targets = []
    for index, route in enumerate(routes):
        if not isinstance(route, dict):
            raise ConfigError(f"{where} route {index} must be an object")
        _unknown(route, _TARGET_FIELDS, f"{where} route {index}")
        to = route.get("to")
        if to != WEB and to not in upstreams:
            raise ConfigError(f"{where} route {index}: 'to' must be 'web' or an upstream name")
        model = route.get("model")
        if model is not None and (not isinstance(model, str) or not model):
            raise ConfigError(f"{where} route {index}: model must be a non-empty string")
        priority = route.get("priority", 0)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ConfigError(f"{where} route {index}: priority must be an integer")
        targets.append(Target(to, model, priority,
                              _positive(route.get("weight"), f"{where} route {index} weight", 1)))
    return tuple(targets)


def parse_plan(data, environ: Mapping[str, str]) -> RelayPlan:
    """A RelayPlan from the decoded UPSTREAMS_FILE. :raise ConfigError: on any mistake."""
    if not isinstance(data, dict):
        raise ConfigError("UPSTREAMS_FILE must hold a JSON object")
    _unknown(data, {"upstreams", "models", "unlisted_models", "hide_upstreams"}, "UPSTREAMS_FILE")
    entries = data.get("upstreams")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("UPSTREAMS_FILE: upstreams must be a non-empty list")
    upstreams: dict[str, Upstream] = {}
    for index, entry in enumerate(entries):
        upstream = _upstream(index, entry, environ)
        if upstream.name in upstreams:
            raise ConfigError(f"UPSTREAMS_FILE: two upstreams are named {upstream.name!r}")
        upstreams[upstream.name] = upstream
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError("UPSTREAMS_FILE: models must be an object of public model names")
    routes: dict[str, tuple[Target, ...]] = {}
    aliases: dict[str, str] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"UPSTREAMS_FILE model {name!r} must be an object")
        if "alias_of" in entry:
            _unknown(entry, {"alias_of"}, f"UPSTREAMS_FILE model {name!r}")
            target = entry["alias_of"]
            if not isinstance(target, str) or not target:
                raise ConfigError(f"UPSTREAMS_FILE model {name!r}: alias_of must be a name")
            aliases[name] = target
        else:
            _unknown(entry, {"routes"}, f"UPSTREAMS_FILE model {name!r}")
            routes[name] = _targets(name, entry, upstreams)
    for name in aliases:
        seen, current = {name}, aliases[name]
        while current in aliases:
            if current in seen or len(seen) > _MAX_ALIAS_DEPTH:
                raise ConfigError(f"UPSTREAMS_FILE model {name!r}: alias_of forms a cycle "
                                  "(or a chain longer than 8)")
            seen.add(current)
            current = aliases[current]
        if current not in routes:
            raise ConfigError(f"UPSTREAMS_FILE model {name!r}: alias_of names {current!r}, "
                              "which has no routes")
    unlisted = data.get("unlisted_models", "discovered")
    if unlisted not in ("discovered", "none"):
        raise ConfigError("UPSTREAMS_FILE: unlisted_models must be 'discovered' or 'none'")
    hide = data.get("hide_upstreams", True)
    if not isinstance(hide, bool):
        raise ConfigError("UPSTREAMS_FILE: hide_upstreams must be true or false")
    wildcards = tuple(name for name in routes if any(ch in name for ch in "*?["))
    return RelayPlan(upstreams, routes, aliases, wildcards, unlisted, hide)


def load_plan(path: str, environ: Mapping[str, str]) -> RelayPlan:
    """Read and check UPSTREAMS_FILE. :raise ConfigError: unreadable, not JSON, or invalid."""
    return parse_plan(read_json_file(path, "UPSTREAMS_FILE"), environ)
