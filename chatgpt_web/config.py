"""Every setting of the service, read from environment variables in this one place.

`Config.from_env()` is the only reader of the environment; nothing else in the package looks at
`os.environ`. Each field documents its variable; README.md and .env.example list them for operators.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from .errors import ConfigError
from .relay.plan import RelayPlan, load_plan

# curl_cffi target pinned to a concrete version: the floating alias "chrome" would change the TLS
# fingerprint whenever curl_cffi is upgraded. curl_cffi sends a User-Agent and sec-ch-ua that match.
DEFAULT_IMPERSONATE = "chrome136"


def _default_cache_dir() -> str:
    """$TMPDIR/chatgpt_web (/tmp/chatgpt_web on Vercel), chosen without touching the disk.

    tempfile.gettempdir() would pick the directory by writing a probe file into it, which at
    import time is a write outside CACHE_DIR, and raises where no temp directory is writable.
    """
    for name in ("TMPDIR", "TEMP", "TMP"):
        if os.environ.get(name):
            return os.path.join(os.environ[name], "chatgpt_web")
    return os.path.join("/tmp" if os.name == "posix" else tempfile.gettempdir(), "chatgpt_web")


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.replace("\n", ",").split(",") if item.strip())


def _as_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def _as_number(name: str, value: str, kind: type, minimum: float) -> float | int:
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name} must be at least {minimum}")
    return number


@dataclass(frozen=True)
class Config:
    """Validated settings. Field metadata names the environment variable that sets each one."""

    base_url: str = field(default="https://chatgpt.com", metadata={"env": "CHATGPT_BASE_URL"})
    auth_url: str = field(default="https://auth0.openai.com", metadata={"env": "CHATGPT_AUTH_URL"})
    proxy: str | None = field(default=None, metadata={"env": "CHATGPT_PROXY"})
    impersonate: str = field(default=DEFAULT_IMPERSONATE, metadata={"env": "CHATGPT_IMPERSONATE"})
    default_model: str = field(default="auto", metadata={"env": "CHATGPT_DEFAULT_MODEL"})
    allowed_proxies: tuple[str, ...] = field(default=(), metadata={"env": "CHATGPT_ALLOWED_PROXIES"})
    port: int = field(default=3000, metadata={"env": "PORT"})
    cache_dir: str = field(default_factory=_default_cache_dir, metadata={"env": "CACHE_DIR"})
    max_prompt_chars: int = field(default=32000, metadata={"env": "MAX_PROMPT_CHARS"})
    # Total deadline for one answer when the caller gives no `timeout`, in seconds.
    request_timeout: float = field(default=120.0, metadata={"env": "REQUEST_TIMEOUT"})
    # Hardest proof-of-work difficulty we try to solve; a lower hex prefix is harder (protocol §4.2).
    pow_max_difficulty: str = field(default="000032", metadata={"env": "POW_MAX_DIFFICULTY"})
    pow_workers: int = field(default=1, metadata={"env": "POW_WORKERS"})
    history_disabled: bool = field(default=False, metadata={"env": "HISTORY_DISABLED"})
    # Seconds before a JWT's exp at which a cached token stops being served.
    token_expiry_margin: int = field(default=300, metadata={"env": "TOKEN_EXPIRY_MARGIN"})
    log_level: str = field(default="INFO", metadata={"env": "LOG_LEVEL"})
    # JSON file of server-held accounts used when a request brings no token of its own.
    accounts_file: str | None = field(default=None, metadata={"env": "ACCOUNTS_FILE"})
    # --- access: the service's own client keys and limits (access.py, limits.py) ---
    # Comma-separated client keys; when set (or API_KEYS_FILE), every endpoint but /, /healthz
    # and /readyz needs one. Secrets: kept out of repr so a logged Config shows none.
    api_keys: tuple[str, ...] = field(default=(), repr=False, metadata={"env": "API_KEYS"})
    # File of hashed client keys, one "sha256:<hex> [label]" per line (python -m chatgpt_web.keys).
    api_keys_file: str | None = field(default=None, metadata={"env": "API_KEYS_FILE"})
    # Key for /admin/*; without it /admin/* answers 403.
    admin_key: str | None = field(default=None, repr=False, metadata={"env": "ADMIN_KEY"})
    # Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: tuple[str, ...] = field(default=(), metadata={"env": "TRUSTED_PROXIES"})
    # "<requests>/<second|minute|hour|day>" per client key and per client IP; "off" disables.
    rate_limit: str = field(default="120/hour", metadata={"env": "RATE_LIMIT"})
    rate_limit_ip: str = field(default="120/hour", metadata={"env": "RATE_LIMIT_IP"})
    # "sliding" (weighted window counter, no burst at window edges) or "fixed".
    rate_limit_strategy: str = field(default="sliding", metadata={"env": "RATE_LIMIT_STRATEGY"})
    # Shared state (tokens, account health, pins, counters) for several instances; unset: CACHE_DIR.
    redis_url: str | None = field(default=None, repr=False, metadata={"env": "REDIS_URL"})
    redis_prefix: str = field(default="chatgpt_web:", metadata={"env": "REDIS_PREFIX"})
    # --- relay: OpenAI-compatible upstreams beside the web accounts (relay/, docs/relay.md) ---
    # JSON file of upstreams, keys and model routes; the relay is off without it.
    upstreams_file: str | None = field(default=None, metadata={"env": "UPSTREAMS_FILE"})
    # A caller's own `sk-...` key is passed through to the route's upstream (client keys off).
    relay_byok: bool = field(default=False, metadata={"env": "RELAY_BYOK"})
    # Distinct upstream keys tried per request before the answer is committed.
    relay_max_attempts: int = field(default=3, metadata={"env": "RELAY_MAX_ATTEMPTS"})
    # Largest request body accepted on relay routes, in bytes (held to replay on failover).
    max_relay_body: int = field(default=26214400, metadata={"env": "MAX_RELAY_BODY"})
    relay_connect_timeout: float = field(default=10.0, metadata={"env": "RELAY_CONNECT_TIMEOUT"})
    # Seconds to wait for the first stream event before committing the answer anyway.
    relay_commit_after: float = field(default=20.0, metadata={"env": "RELAY_COMMIT_AFTER"})
    # Seconds of upstream silence before an SSE ": ping" comment (0: none).
    relay_ping_interval: float = field(default=15.0, metadata={"env": "RELAY_PING_INTERVAL",
                                                               "minimum": 0})
    # Seconds without an upstream byte after commit, and for a whole answer, before giving up.
    relay_idle_timeout: float = field(default=300.0, metadata={"env": "RELAY_IDLE_TIMEOUT"})
    relay_total_timeout: float = field(default=600.0, metadata={"env": "RELAY_TOTAL_TIMEOUT"})
    # Seconds before a disabled upstream key (refused or out of quota) is tried once again.
    relay_recheck: float = field(default=3600.0, metadata={"env": "RELAY_RECHECK"})
    # Seconds between GET /models refreshes per upstream key (0: configured lists only).
    relay_model_discovery: float = field(default=21600.0, metadata={"env": "RELAY_MODEL_DISCOVERY",
                                                                     "minimum": 0})
    # "web" or "relay": which goes first for a model both know and no route names.
    route_preference: str = field(default="web", metadata={"env": "ROUTE_PREFERENCE"})
    # UPSTREAMS_FILE, parsed (read at start with the environment its env: references name).
    relay: RelayPlan | None = field(default=None, repr=False, compare=False, metadata={})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Build a Config from `environ` (default `os.environ`); unknown variables are ignored."""
        environ = os.environ if environ is None else environ
        values: dict = {}
        for spec in fields(cls):
            name = spec.metadata.get("env")
            if name is None:
                continue
            raw = environ.get(name)
            if raw is None or (raw.strip() == "" and spec.type != "str"):
                continue
            values[spec.name] = _convert(spec, name, raw)
        if values.get("upstreams_file"):
            values["relay"] = load_plan(values["upstreams_file"], environ)
        return cls(**values)._validated()

    def _validated(self) -> Config:
        for name, url in (("CHATGPT_BASE_URL", self.base_url), ("CHATGPT_AUTH_URL", self.auth_url)):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{name} must be an http(s) URL")
        try:
            int(self.pow_max_difficulty, 16)
        except ValueError:
            raise ConfigError("POW_MAX_DIFFICULTY must be hex digits") from None
        from .limits import parse_rate  # here, not at the top: limits reads Config
        parse_rate("RATE_LIMIT", self.rate_limit)
        parse_rate("RATE_LIMIT_IP", self.rate_limit_ip)
        if self.route_preference not in ("web", "relay"):
            raise ConfigError("ROUTE_PREFERENCE must be web or relay")
        if self.rate_limit_strategy not in ("sliding", "fixed"):
            raise ConfigError("RATE_LIMIT_STRATEGY must be sliding or fixed")
        from .access import parse_networks
        parse_networks(self.trusted_proxies)
        if self.redis_url and not _is_redis_url(self.redis_url):
            # The value is not quoted: it may carry a password.
            raise ConfigError("REDIS_URL must be a redis://, rediss:// or unix:// URL")
        return self


def is_url(value: str, schemes: tuple[str, ...]) -> bool:
    """True if `value` is a URL with one of `schemes`, a host and a numeric port if any."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname)


def _is_redis_url(url: str) -> bool:
    if is_url(url, ("redis", "rediss")):
        return True
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - as in is_url
    except ValueError:
        return False
    return parts.scheme == "unix" and bool(parts.path)


def _convert(spec, name: str, raw: str):
    kind = spec.type
    if kind in ("int",):
        return _as_number(name, raw, int, spec.metadata.get("minimum", 1))
    if kind in ("float",):
        return _as_number(name, raw, float, spec.metadata.get("minimum", 0.001))
    if kind == "bool":
        return _as_bool(name, raw)
    if kind == "tuple[str, ...]":
        return _split_list(raw)
    value = raw.strip()
    if spec.name in ("base_url", "auth_url"):
        value = value.rstrip("/")
    return value or None if kind == "str | None" else value
