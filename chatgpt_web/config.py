"""Every setting of the service, read from environment variables and parsed once, in this module.

Each `Config` field declares its variable and its parser (`setting("PORT", positive_int, 3000)`),
so a Config holds typed values: numbers, a `Rate`, IP networks, checked URLs. The services use
those values as they are; nothing parses a setting twice.

Which problems stop start-up and which /readyz reports follows one rule:

* A value that is malformed, or names something this installation cannot do (a URL without a
  host, a proxy that is not a proxy URL, a browser target curl_cffi does not know), is a problem
  of the settings. `Config.problems()` lists them all; `from_env()` and `create_app()` refuse to
  start with every one of them in the message, and /readyz reports the same list.
* What depends on the machine and may change while the service runs (the cache directory can be
  written, Redis answers, ACCOUNTS_FILE can be read) is checked by /readyz beside the service that
  uses it.

Messages name the variable, never its value when it may hold a secret (proxy and Redis URLs).
Besides `from_env()`, only two readers of `os.environ` exist: the default of CACHE_DIR (the
temporary directory variables) and metrics.py (PROMETHEUS_MULTIPROC_DIR, which gunicorn.conf.py
sets for its workers).
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from curl_cffi.curl import DEFAULT_CACERT
from curl_cffi.requests import impersonate as curl_impersonate

from .errors import ConfigError

# curl_cffi target pinned to a concrete version: the floating alias "chrome" would change the TLS
# fingerprint whenever curl_cffi is upgraded. curl_cffi sends a User-Agent and sec-ch-ua that match.
DEFAULT_IMPERSONATE = "chrome152"
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
_OFF = ("", "0", "off", "none", "false")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Rate:
    """`requests` per `window` seconds (RATE_LIMIT, RATE_LIMIT_IP).

    `pooled_only` marks the defaults: a limit nobody set protects only what the server pays for,
    requests served by its own accounts; a limit the operator wrote applies to every request.
    """

    requests: int
    window: int
    pooled_only: bool = False


def read_json_file(path: str, setting: str) -> Any:
    """The JSON document of the file a setting names (ACCOUNTS_FILE, KEYS_FILE, UPSTREAMS_FILE).

    :raise ConfigError: naming the setting, when the file cannot be read or is not JSON (never
        quoting its content, which holds secrets).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise ConfigError(f"{setting} cannot be read ({type(exc).__name__})") from None
    except ValueError:
        raise ConfigError(f"{setting} is not valid JSON") from None


# --- parsers: the raw text of one variable -> its value. :raise ConfigError: "must ..." --------
def text(raw: str) -> str:
    return raw.strip()


def optional_text(raw: str) -> str | None:
    return raw.strip() or None


def text_list(raw: str) -> tuple[str, ...]:
    """Comma- (or newline-) separated items."""
    return tuple(item.strip() for item in raw.replace("\n", ",").split(",") if item.strip())


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"must be true or false, not {raw.strip()!r}")


def _number(raw: str, kind: type, minimum: float, what: str):
    try:
        number = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"must be {what}, not {raw.strip()!r}") from None
    if not number >= minimum or not math.isfinite(number):  # "nan" and "inf" parse as floats
        raise ConfigError(f"must be {what}, not {raw.strip()!r}")
    return number


def positive_int(raw: str) -> int:
    return _number(raw, int, 1, "a whole number of at least 1")


def non_negative_int(raw: str) -> int:
    return _number(raw, int, 0, "a whole number of at least 0")


def positive_float(raw: str) -> float:
    return _number(raw, float, 0.001, "a number of at least 0.001")


def non_negative_float(raw: str) -> float:
    return _number(raw, float, 0, "a number of at least 0")


def seconds_between(low: float, high: float) -> Callable[[str], float]:
    """A parser of a number of seconds from `low` to `high` (not NaN, not infinite)."""
    what = f"a number of seconds from {low:g} to {high:g}"

    def parse(raw: str) -> float:
        number = _number(raw, float, low, what)
        if not low <= number <= high:  # also false for NaN
            raise ConfigError(f"must be {what}, not {raw.strip()!r}")
        return number
    return parse


def hex_digits(raw: str) -> str:
    value = raw.strip()
    try:
        int(value, 16)
    except ValueError:
        raise ConfigError("must be hex digits") from None
    return value


def one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"must be {' or '.join(choices)}")
        return value
    return parse


def is_url(value: str, schemes: tuple[str, ...]) -> bool:
    """True if `value` is a URL with one of `schemes`, a host and a numeric port if any."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname)


def http_url(raw: str) -> str:
    """An http(s) URL with a host, without a trailing slash."""
    value = raw.strip().rstrip("/")
    if not is_url(value, ("http", "https")):
        raise ConfigError("must be an http(s) URL with a host")
    return value


def http_url_list(raw: str) -> tuple[str, ...]:
    values = text_list(raw)
    if any(not is_url(value, ("http", "https")) for value in values):
        raise ConfigError("must hold only http(s) URLs with a host")
    return values


def origin_list(raw: str) -> tuple[str, ...]:
    """Web origins (scheme://host[:port], no path), or "*" for any (CORS_ORIGINS)."""
    values = tuple(value.rstrip("/") for value in text_list(raw))
    for value in values:
        if value != "*" and (not is_url(value, ("http", "https")) or urlsplit(value).path):
            raise ConfigError("must hold origins like https://chat.example.com (or *)")
    return values


def proxy_url(raw: str) -> str | None:
    """A proxy URL (http, https, socks4 or socks5); never quoted: it may carry a password."""
    value = raw.strip()
    if value and not is_url(value, PROXY_SCHEMES):
        raise ConfigError("must be a proxy URL (http, https, socks4 or socks5) with a host")
    return value or None


def ca_file(raw: str) -> str | None:
    """A readable PEM file holding at least one certificate (a CA bundle); its absolute path."""
    value = raw.strip()
    if not value:
        return None
    try:
        with open(value, "rb") as handle:
            pem = handle.read(4 << 20)
    except OSError as exc:
        raise ConfigError(f"names a file that cannot be read ({type(exc).__name__}: "
                          f"{value})") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"must name a PEM file of CA certificates ({value} holds none)")
    return os.path.abspath(value)


# A certificate's file name in a directory laid out by c_rehash or `openssl rehash`: its subject
# hash, then a counter for certificates whose subjects hash alike.
_HASHED_NAME = re.compile(r"[0-9a-f]{8}\.[0-9]+")
# The bundle update-ca-certificates (Debian, Ubuntu, Alpine) writes into the directory where it
# also links each certificate by hash: two forms of the same certificates.
_OS_BUNDLE_NAME = "ca-certificates.crt"


def _has_hashed_certificates(directory: str) -> bool:
    try:
        with os.scandir(directory) as entries:
            return any(_HASHED_NAME.fullmatch(entry.name) for entry in entries)
    except OSError:
        return False


def os_ca_directory(bundle: str | None = None) -> str | None:
    """The directory form of the CA bundle curl_cffi would load (`bundle`, default its own
    choice: SSL_CERT_FILE, CURL_CA_BUNDLE or REQUESTS_CA_BUNDLE, Python's default CA file, else
    certifi's), when that bundle is the operating system's (`ca-certificates.crt`, beside the same
    certificates linked by hash); None otherwise (certifi's bundle, a bundle of one's own)."""
    real = os.path.realpath(DEFAULT_CACERT if bundle is None else bundle)
    directory = os.path.dirname(real)
    if os.path.basename(real) != _OS_BUNDLE_NAME or not _has_hashed_certificates(directory):
        return None
    return directory


def ca_directory(raw: str) -> str | None:
    """`auto`: os_ca_directory(); `off`: none; else a directory of CA certificates named by
    subject hash (`openssl rehash` lays one out); its absolute path."""
    value = raw.strip()
    if value == "auto":
        return os_ca_directory()
    if value == "off":
        return None
    if not os.path.isdir(value):
        raise ConfigError(f"must be auto, off or a directory ({value} is none)")
    if not _has_hashed_certificates(value):
        raise ConfigError(f"must name a directory of CA certificates linked by subject hash "
                          f"({value} holds none: run `openssl rehash` on it)")
    return os.path.abspath(value)


def redis_url(raw: str) -> str | None:
    """A redis://, rediss:// or unix:// URL; never quoted: it may carry a password."""
    value = raw.strip()
    if not value:
        return None
    if is_url(value, ("redis", "rediss")):
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - as in is_url
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "unix" or not parts.path:
        raise ConfigError("must be a redis://, rediss:// or unix:// URL")
    return value


def impersonation_targets() -> frozenset[str]:
    """The browser targets the installed curl_cffi can impersonate."""
    targets = {target.value for target in curl_impersonate.BrowserType}
    # Floating aliases ("chrome", "safari"...) resolve to a concrete target inside curl_cffi.
    targets.update(getattr(curl_impersonate, "REAL_TARGET_MAP", {}))
    return frozenset(targets)


def impersonation_target(raw: str) -> str:
    value = raw.strip()
    if value not in impersonation_targets():
        raise ConfigError("must be a browser target this curl_cffi supports (e.g. "
                          f"{DEFAULT_IMPERSONATE})")
    return value


def rate(raw: str) -> Rate | None:
    """"120/hour" -> Rate(120, 3600); "off", "0" or blank -> None (no limit)."""
    if raw.strip().lower() in _OFF:
        return None
    match = _RATE.match(raw)
    if not match or int(match.group(1)) < 1:
        raise ConfigError("must look like 120/hour (per second, minute, hour or day) or be off")
    return Rate(int(match.group(1)), UNITS[match.group(2).lower()])


def ipv6_prefix(raw: str) -> int:
    value = _number(raw, int, 1, "a prefix length from 1 to 128")
    if value > 128:
        raise ConfigError("must be a prefix length from 1 to 128")
    return value


def networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR networks (a bare address is a /32 or /128)."""
    try:
        return tuple(ipaddress.ip_network(value, strict=False) for value in text_list(raw))
    except ValueError:
        raise ConfigError("must hold IP addresses or networks (CIDR)") from None


def setting(env: str, parse: Callable[[str], Any], default: Any = None, *,
            secret: bool = False, blank_is_value: bool = False, factory=None):
    """A Config field set by the variable `env`, parsed by `parse`.

    A blank variable means the default, unless `blank_is_value` (RATE_LIMIT="" turns it off).
    `secret` keeps the value out of repr, so a logged Config shows none.
    """
    metadata = {"env": env, "parse": parse, "blank_is_value": blank_is_value}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


def _default_cache_dir() -> str:
    """$TMPDIR/chatgpt_web (/tmp/chatgpt_web on Vercel), chosen without touching the disk.

    tempfile.gettempdir() would pick the directory by writing a probe file into it, which at
    import time is a write outside CACHE_DIR, and raises where no temp directory is writable.
    """
    for name in ("TMPDIR", "TEMP", "TMP"):
        if os.environ.get(name):
            return os.path.join(os.environ[name], "chatgpt_web")
    return os.path.join("/tmp" if os.name == "posix" else tempfile.gettempdir(), "chatgpt_web")


@dataclass(frozen=True)
class Config:
    """Parsed settings. Each field's metadata names its environment variable and its parser."""

    base_url: str = setting("CHATGPT_BASE_URL", http_url, "https://chatgpt.com")
    auth_url: str = setting("CHATGPT_AUTH_URL", http_url, "https://auth.openai.com")
    # --- login (upstream/auth.py, tokens.py; docs/protocol-auth.md) ---
    # "openai": the auth.openai.com sign-in of today; "auth0": the 2023 Auth0 pages (old mirrors).
    login_flow: str = setting("CHATGPT_LOGIN_FLOW", one_of("openai", "auth0"), "openai")
    # OAuth client id sent with refresh tokens; unset: the known ones are tried in turn.
    refresh_client_id: str | None = setting("CHATGPT_REFRESH_CLIENT_ID", optional_text)
    # Seconds between two GET /backend-api/me checks of one account's access token.
    account_check_interval: int = setting("ACCOUNT_CHECK_INTERVAL", positive_int, 3600)
    proxy: str | None = setting("CHATGPT_PROXY", proxy_url, secret=True)
    # PEM bundle of the CAs trusted for upstream TLS (a private mirror, a TLS-inspecting proxy)
    # instead of the bundled public ones; unset: the public CAs (certifi's, as curl_cffi's).
    ca_file: str | None = setting("CHATGPT_CA_FILE", ca_file)
    # Without CHATGPT_CA_FILE, the public CAs are read from this directory (by subject hash, one
    # certificate when a chain needs it) instead of from a bundle file, which every upstream
    # handle would hold whole: about 1 MB each for the ~140 public roots (curl_transfer.py).
    # Default "auto": the OS's directory where curl_cffi would load the OS's bundle; "off": the
    # bundle file, as curl_cffi chooses it.
    ca_dir: str | None = setting("CHATGPT_CA_DIR", ca_directory, factory=os_ca_directory)
    impersonate: str = setting("CHATGPT_IMPERSONATE", impersonation_target, DEFAULT_IMPERSONATE)
    # Dialect of the site: "2026", "2024", or "auto" (2026, and 2024 for an upstream that
    # answers 404 to the 2026 endpoints, remembered 15 minutes). docs/protocol-requests.md.
    protocol: str = setting("CHATGPT_PROTOCOL", one_of("auto", "2026", "2024"), "auto")
    # 2026: the conduit prepare runs while the sentinel's requests do, a round trip less per
    # answer (upstream/conversation.py). "auto": when the connection multiplexes (HTTP/2, as the
    # site's); "on": over HTTP/1.1 too, on a second connection; "off": one after the other.
    prepare_beside: str = setting("CONDUIT_PREPARE_BESIDE", one_of("auto", "on", "off"), "auto")
    # A handed-off answer is read from the site's WebSocket when it offers one
    # (upstream/handoff.py); false: by the resume stream, then by reading the conversation.
    handoff_websocket: bool = setting("HANDOFF_WEBSOCKET", boolean, True)
    default_model: str = setting("CHATGPT_DEFAULT_MODEL", text, "auto")
    allowed_proxies: tuple[str, ...] = setting("CHATGPT_ALLOWED_PROXIES", http_url_list, ())
    port: int = setting("PORT", positive_int, 3000)
    cache_dir: str = setting("CACHE_DIR", text, factory=_default_cache_dir)
    max_prompt_chars: int = setting("MAX_PROMPT_CHARS", positive_int, 32000)
    # Total deadline for one answer when the caller gives no `timeout`, in seconds.
    request_timeout: float = setting("REQUEST_TIMEOUT", positive_float, 120.0)
    # Hardest proof-of-work difficulty we try to solve; a lower hex prefix is harder.
    pow_max_difficulty: str = setting("POW_MAX_DIFFICULTY", hex_digits, "000032")
    pow_workers: int = setting("POW_WORKERS", positive_int, 1)
    # "lazy": a process loads the usage tokenizer at its first count, so one never asked for
    # usage holds none; "preload": the gunicorn master loads it before it forks the workers,
    # which then share one copy (usage.py; the measurements behind the default: README "Server").
    usage_tokenizer: str = setting("USAGE_TOKENIZER", one_of("preload", "lazy"), "lazy")
    history_disabled: bool = setting("HISTORY_DISABLED", boolean, False)
    # Seconds before a JWT's exp at which a cached token stops being served (0: until exp).
    token_expiry_margin: int = setting("TOKEN_EXPIRY_MARGIN", non_negative_int, 300)
    log_level: str = setting("LOG_LEVEL", one_of("debug", "info", "warning", "warn",
                                                 "error", "critical"), "info")
    # JSON file of server-held accounts used when a request brings no token of its own.
    accounts_file: str | None = setting("ACCOUNTS_FILE", optional_text)
    # --- access: the service's own client keys and limits (access.py, keys.py, limits.py) ---
    # Comma-separated client keys; when set (or API_KEYS_FILE), every endpoint but /, /healthz
    # and /readyz needs one.
    api_keys: tuple[str, ...] = setting("API_KEYS", text_list, (), secret=True)
    # File of hashed client keys, one "sha256:<hex> [label]" per line (python -m chatgpt_web.keys).
    api_keys_file: str | None = setting("API_KEYS_FILE", optional_text)
    # JSON file of scoped client keys (hashes only, with their limits): keys.py, README.
    keys_file: str | None = setting("KEYS_FILE", optional_text)
    # Days the per-key usage ledger keeps each day's counters (ledger.py).
    usage_retention_days: int = setting("USAGE_RETENTION_DAYS", positive_int, 90)
    # Per-key totals in /metrics (one series per key: off by default for cardinality).
    metrics_per_key: bool = setting("METRICS_PER_KEY", boolean, False)
    # Screen prompts before they reach an account: off, flag (count and log the category) or
    # block (400 content_blocked), against MODERATION_WORDS_FILE (moderation.py).
    moderation: str = setting("MODERATION", one_of("off", "flag", "block"), "off")
    moderation_words_file: str | None = setting("MODERATION_WORDS_FILE", optional_text)
    # Who judges: "words" (MODERATION_WORDS_FILE) or "relay" (/v1/moderations of the relay
    # target of MODERATION_MODEL); unset: words when MODERATION_WORDS_FILE is set, else relay.
    moderation_engine: str | None = setting("MODERATION_ENGINE", one_of("words", "relay"))
    moderation_model: str = setting("MODERATION_MODEL", text, "omni-moderation-latest")
    # When the relay's check itself fails: let the prompt through (allow) or refuse it (block).
    moderation_on_error: str = setting("MODERATION_ON_ERROR", one_of("allow", "block"), "allow")
    # Seconds a relay verdict is kept, under a keyed hash of the text (0: not kept).
    moderation_cache_seconds: int = setting("MODERATION_CACHE_SECONDS", non_negative_int, 600)
    moderation_timeout: float = setting("MODERATION_TIMEOUT", positive_float, 10.0)
    # Account health alerts (alerts.py): where to POST them, private URL prefixes allowed past
    # the SSRF guard, the fewest accounts in service before "few_healthy", seconds between looks.
    alert_webhook_url: str | None = setting("ALERT_WEBHOOK_URL", http_url, secret=True)
    alert_webhook_allow: tuple[str, ...] = setting("ALERT_WEBHOOK_ALLOW", http_url_list, ())
    alert_min_healthy: int = setting("ALERT_MIN_HEALTHY", non_negative_int, 1)
    alert_interval: int = setting("ALERT_INTERVAL", positive_int, 60)
    # Key for /admin/*; without it /admin/* answers 403.
    admin_key: str | None = setting("ADMIN_KEY", optional_text, secret=True)
    # Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is believed.
    trusted_proxies: tuple[IPNetwork, ...] = setting("TRUSTED_PROXIES", networks, ())
    # "<requests>/<second|minute|hour|day>" per client key and per client IP; "off" disables.
    # Unset, both are 120/hour for requests served by the account pool only (Rate.pooled_only).
    rate_limit: Rate | None = setting("RATE_LIMIT", rate, Rate(120, 3600, pooled_only=True),
                                      blank_is_value=True)
    rate_limit_ip: Rate | None = setting("RATE_LIMIT_IP", rate, Rate(120, 3600, pooled_only=True),
                                         blank_is_value=True)
    # IPv6 clients are counted per address with this prefix length: 128 per address, 64 per /64
    # (one home or one server usually holds a whole /64).
    rate_limit_ipv6_prefix: int = setting("RATE_LIMIT_IPV6_PREFIX", ipv6_prefix, 128)
    # Refused authentications (wrong or missing key, wrong admin key) allowed per client IP;
    # beyond, 429 with Retry-After before any key is compared.
    auth_failure_limit: Rate | None = setting("AUTH_FAILURE_LIMIT", rate, Rate(20, 60),
                                              blank_is_value=True)
    # "sliding" (weighted window counter, no burst at window edges) or "fixed".
    rate_limit_strategy: str = setting("RATE_LIMIT_STRATEGY", one_of("sliding", "fixed"),
                                       "sliding")
    # Shared state (tokens, account health, pins, counters) for several instances; unset: CACHE_DIR.
    redis_url: str | None = setting("REDIS_URL", redis_url, secret=True)
    redis_prefix: str = setting("REDIS_PREFIX", text, "chatgpt_web:")
    # Origins whose web pages may call the API (cors.py); "*" for any, only with API keys.
    cors_origins: tuple[str, ...] = setting("CORS_ORIGINS", origin_list, ())
    # --- limits on what a caller or an upstream may make the service read ---
    # Largest request body in bytes (413 beyond); unset: derived from MAX_PROMPT_CHARS, see
    # `request_body_limit`.
    max_request_bytes: int | None = setting("MAX_REQUEST_BYTES", positive_int)
    # Largest file a caller may send (an image or a document, 413 beyond): docs/files.md.
    max_upload_bytes: int = setting("MAX_UPLOAD_BYTES", positive_int, 20 << 20)
    # URL prefixes of image servers fetched without the public-address check (an operator's own
    # server; tests), and a CA bundle to verify those servers' certificates with.
    image_url_allow: tuple[str, ...] = setting("IMAGE_URL_ALLOW", http_url_list, ())
    image_url_ca_file: str | None = setting("IMAGE_URL_CA_FILE", optional_text)
    # Seconds to fetch one remote image, redirects included (a slow server must not hold a
    # request for its whole REQUEST_TIMEOUT).
    image_url_timeout: float = setting("IMAGE_URL_TIMEOUT", seconds_between(0.1, 300), 20.0)
    # Most messages one /v1/chat/completions request may carry (400 beyond).
    max_messages: int = setting("MAX_MESSAGES", positive_int, 500)
    # Longest upstream SSE line or event, and most bytes of one upstream answer (502 beyond): a
    # caller may point reverse_proxy at a server it controls.
    max_upstream_event_bytes: int = setting("MAX_UPSTREAM_EVENT_BYTES", positive_int, 1 << 20)
    max_upstream_answer_bytes: int = setting("MAX_UPSTREAM_ANSWER_BYTES", positive_int, 32 << 20)
    # --- generated images (api/images.py, image_links.py, upstream/downloads.py) ---
    # Key of the HMAC that signs image links; unset: a random one kept in the Store.
    image_link_secret: str | None = setting("IMAGE_LINK_SECRET", optional_text, secret=True)
    # Seconds an image link (/v1/files/<id>/content?expires=&sig=) stays valid.
    image_link_ttl: int = setting("IMAGE_LINK_TTL", positive_int, 3600)
    # Seconds one image turn may take, the wait for the drawn image included.
    image_timeout: float = setting("IMAGE_TIMEOUT", positive_float, 300.0)
    # Origin the image links name (e.g. https://chat.example.com behind a TLS proxy); unset:
    # the origin the request came to.
    public_url: str | None = setting("PUBLIC_URL", http_url)
    # Largest generated file the service downloads from an account, in bytes (502 beyond).
    max_image_bytes: int = setting("MAX_IMAGE_BYTES", positive_int, 20 << 20)
    # --- slow clients (buffered_worker.py, the gunicorn worker) ---
    # Seconds a request's headers may take to arrive, and then its body (408 and closed beyond).
    request_header_timeout: float = setting("REQUEST_HEADER_TIMEOUT", positive_float, 10.0)
    request_body_timeout: float = setting("REQUEST_BODY_TIMEOUT", positive_float, 30.0)
    # Seconds a client may take none of its answer before the answer ends as if it had left
    # (nginx's send_timeout: between two bytes it takes, not for the whole answer). No "off": a
    # client that stops reading would hold its stream, thread and upstream connection for good.
    client_send_timeout: float = setting("CLIENT_SEND_TIMEOUT", positive_float, 60.0)
    # Connections one client address may hold per worker process (0: no cap).
    max_connections_per_ip: int = setting("MAX_CONNECTIONS_PER_IP", non_negative_int, 64)
    # A worker whose resident memory stays this many MB above its start once it is idle after a
    # burst is replaced by a fresh one (buffered_worker.py; 0: never). Needs a second worker.
    worker_recycle_mb: int = setting("WORKER_RECYCLE_MB", non_negative_int, 16)
    # One thread per worker sends every open SSE stream (stream_pump.py, docs/stream-pump.md:
    # about a tenth less CPU per streamed answer, half the context switches, ~4 MB more per
    # worker); off: each stream is sent by its own request thread.
    stream_pump: bool = setting("STREAM_PUMP", boolean, True)
    # The longest an upstream event waits in the pump so that one wake-up handles the events of
    # many streams: the wait grows with the streams a worker runs and reaches this at 250
    # (stream_pump.coalesce_window). Shorter: smoother streams under load, for more CPU.
    stream_coalesce_seconds: float = setting("STREAM_COALESCE_SECONDS", seconds_between(0, 1),
                                             0.4)
    # --- relay: OpenAI-compatible upstreams beside the web accounts (relay/, docs/relay.md) ---
    # JSON file of upstreams, keys and model routes; the relay is off without it.
    upstreams_file: str | None = setting("UPSTREAMS_FILE", optional_text)
    # A caller's own `sk-...` key is passed through to the route's upstream (client keys off).
    relay_byok: bool = setting("RELAY_BYOK", boolean, False)
    # Distinct upstream keys tried per request before the answer is committed.
    relay_max_attempts: int = setting("RELAY_MAX_ATTEMPTS", positive_int, 3)
    # Largest request body on relay routes, in bytes (held to replay on failover).
    max_relay_body: int = setting("MAX_RELAY_BODY", positive_int, 26214400)
    relay_connect_timeout: float = setting("RELAY_CONNECT_TIMEOUT", positive_float, 10.0)
    # Seconds to wait for the first stream event before committing the answer anyway.
    relay_commit_after: float = setting("RELAY_COMMIT_AFTER", positive_float, 20.0)
    # Seconds of upstream silence before an SSE ": ping" comment (0: none).
    relay_ping_interval: float = setting("RELAY_PING_INTERVAL", non_negative_float, 15.0)
    # Seconds without an upstream byte after commit, and for a whole answer, before giving up.
    relay_idle_timeout: float = setting("RELAY_IDLE_TIMEOUT", positive_float, 300.0)
    relay_total_timeout: float = setting("RELAY_TOTAL_TIMEOUT", positive_float, 600.0)
    # Seconds before a disabled upstream key (refused, out of quota) gets one trial again.
    relay_recheck: float = setting("RELAY_RECHECK", positive_float, 3600.0)
    # Seconds between GET /models refreshes per upstream key (0: configured lists only).
    relay_model_discovery: float = setting("RELAY_MODEL_DISCOVERY", non_negative_float, 21600.0)
    # "web" or "relay": which goes first for a model both know and no route names.
    route_preference: str = setting("ROUTE_PREFERENCE", one_of("web", "relay"), "web")

    @property
    def site_ca_directory(self) -> str | None:
        """The CA directory the ChatGPT site's connections verify with: CHATGPT_CA_DIR, unless
        CHATGPT_CA_FILE names the CAs to trust instead (the relay's links use ca_dir as it is)."""
        return None if self.ca_file else self.ca_dir

    @property
    def request_body_limit(self) -> int:
        """MAX_REQUEST_BYTES, or when unset: a prompt of MAX_PROMPT_CHARS characters written in
        the costliest way a client may use (12 bytes a character: a JSON \\uXXXX surrogate pair,
        or %XX-encoded UTF-8 in a form) plus one file of MAX_UPLOAD_BYTES in base64 (4 bytes
        for 3) plus 64 KiB for the other fields, at least 1 MiB."""
        if self.max_request_bytes:
            return self.max_request_bytes
        return max(1 << 20, 12 * self.max_prompt_chars + -(-4 * self.max_upload_bytes // 3)
                   + (64 << 10))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Parse the settings of `environ` (default `os.environ`); unknown variables are ignored.

        :raise ConfigError: every problem of the settings at once, one per line.
        """
        environ = os.environ if environ is None else environ
        values: dict = {}
        problems = []
        for spec in fields(cls):
            raw = environ.get(spec.metadata["env"])
            if raw is None or (not raw.strip() and not spec.metadata["blank_is_value"]):
                continue
            try:
                values[spec.name] = spec.metadata["parse"](raw)
            except ConfigError as problem:
                problems.append(f"{spec.metadata['env']} {problem}")
        if problems:
            raise ConfigError("; ".join(problems))
        return cls(**values).checked()

    def problems(self) -> list[str]:
        """What is wrong with these settings, each naming its variable (never a secret value).

        Values given as text (a Config built in code) are checked by their field's parser; parsed
        values were checked when they were parsed.
        """
        found = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
                value = ",".join(value)
            if not isinstance(value, str) or (not value and not spec.metadata["blank_is_value"]):
                continue
            try:
                spec.metadata["parse"](value)
            except ConfigError as problem:
                found.append(f"{spec.metadata['env']} {problem}")
        if "*" in self.cors_origins and not (self.api_keys or self.api_keys_file
                                             or self.keys_file):
            found.append("CORS_ORIGINS=* needs API_KEYS or API_KEYS_FILE: without keys any web "
                         "page could use this service")
        if self.moderation != "off" and self.moderation_engine_name == "words" \
                and not self.moderation_words_file:
            found.append(f"MODERATION={self.moderation} needs MODERATION_WORDS_FILE")
        if self.moderation != "off" and self.moderation_engine_name == "relay" \
                and not self.upstreams_file:
            found.append(f"MODERATION={self.moderation} needs MODERATION_WORDS_FILE, or "
                         "UPSTREAMS_FILE for MODERATION_ENGINE=relay")
        return found

    @property
    def moderation_engine_name(self) -> str:
        """MODERATION_ENGINE, or its default: the word list when one is given, else the relay."""
        if self.moderation_engine:
            return self.moderation_engine
        return "words" if self.moderation_words_file else "relay"

    def checked(self) -> Config:
        """This Config, if it has no problems. :raise ConfigError: all of them, one message."""
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return self


def variables() -> list[str]:
    """Every environment variable a Config reads, in field order."""
    return [spec.metadata["env"] for spec in fields(Config)]
