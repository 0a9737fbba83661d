"""Who may call the service: client API keys, the admin key, the client's IP, and the guard.

When API_KEYS or API_KEYS_FILE is set, every endpoint except OPEN_PATHS needs one of the keys, as
`Authorization: Bearer <key>` or, on the original form endpoints, the `api_key` field. `/admin/*`
needs ADMIN_KEY instead and is closed when none is set. Keys are held as SHA-256 digests and a
presented key is compared against every digest with `hmac.compare_digest`, so neither the
comparison's time nor a memory dump gives a key away.

The guard runs before every request (`init_app`) and then asks the rate limiter (limits.py) about
the client key and the client IP; the IP honours X-Forwarded-For only from TRUSTED_PROXIES.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass

from flask import Flask, request

from .config import Config
from .errors import ConfigError, Forbidden, Unauthorized

# Reachable without a key: a load balancer's probes, the playground page and the console page
# (the pages hold no data: their scripts ask for the key and send it with every call).
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/admin"})
# The pages' scripts and styles (api/pages.py).
OPEN_PREFIXES = ("/static/",)
# Need a key but are not rate limited: a Prometheus scrape every 15 s would exhaust 120/hour.
UNLIMITED_PATHS = frozenset({"/metrics"})
ADMIN_PREFIX = "/admin"
HASH_PREFIX = "sha256:"
MAX_KEY_LENGTH = 512



def key_digest(key: str) -> str:
    """The hex SHA-256 of a client key: what API_KEYS_FILE stores."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ClientKey:
    """A client key that matched. `id` is a short digest prefix, safe to log and to show."""

    id: str
    label: str | None = None


class KeyRing:
    """The accepted client keys, as digests."""

    def __init__(self, digests: dict[str, str | None]):
        # digest (hex) -> label
        self._digests = {bytes.fromhex(digest): label for digest, label in digests.items()}

    @classmethod
    def from_config(cls, config: Config) -> KeyRing:
        """The keys of API_KEYS plus those of API_KEYS_FILE.

        :raise ConfigError: unreadable file or a line that is not "sha256:<64 hex> [label]".
        """
        digests: dict[str, str | None] = {key_digest(key): None for key in config.api_keys}
        if config.api_keys_file:
            digests.update(read_keys_file(config.api_keys_file))
        return cls(digests)

    @property
    def enabled(self) -> bool:
        """True when keys are configured, so that requests must present one."""
        return bool(self._digests)

    def match(self, presented: str | None) -> ClientKey | None:
        """The ClientKey `presented` is, or None. Every digest is compared, in constant time."""
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for candidate, label in self._digests.items():
            if hmac.compare_digest(candidate, digest):
                found = ClientKey(digest.hex()[:12], label)
        return found


def read_keys_file(path: str) -> dict[str, str | None]:
    """Parse API_KEYS_FILE: "sha256:<hex> [label]" lines; blank lines and # comments are skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"API_KEYS_FILE cannot be read ({type(exc).__name__})") from None
    digests: dict[str, str | None] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, label = line.partition(" ")
        digest = digest.lower()
        hex_part = digest[len(HASH_PREFIX):]
        if (not digest.startswith(HASH_PREFIX) or len(hex_part) != 64
                or any(c not in "0123456789abcdef" for c in hex_part)):
            # Never quote the line: an operator may have pasted a clear key by mistake.
            raise ConfigError(f"API_KEYS_FILE line {number} is not 'sha256:<64 hex digits> "
                              "[label]' (make lines with: python -m chatgpt_web.keys new)")
        digests[hex_part] = label.strip() or None
    return digests


def parse_networks(values) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """TRUSTED_PROXIES as networks (a bare address is a /32 or /128). :raise ConfigError."""
    try:
        return tuple(ipaddress.ip_network(value, strict=False) for value in values)
    except ValueError:
        raise ConfigError("TRUSTED_PROXIES must hold IP addresses or networks (CIDR)") from None


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted) -> str:
    """The address of the client: `remote_addr`, unless that is a trusted proxy, in which case
    X-Forwarded-For is read from the right, past every trusted proxy, to the first other hop.

    Reading from the right matters: the left part of the header is whatever the client sent.
    """
    address = remote_addr or "unknown"
    if not trusted or not forwarded_for or not _is_trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _parses(hop):
            break  # a malformed hop: stop at the last address we could verify
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


def _parses(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def bearer() -> str | None:
    """The credential of the request's `Authorization: Bearer <credential>` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def presented_key() -> str | None:
    """The key the request presents: `Authorization: Bearer <key>`, else the `api_key` field."""
    token = bearer()
    if token:
        return token
    if request.is_json:
        body = request.get_json(silent=True)
        value = body.get("api_key") if isinstance(body, dict) else None
    else:
        value = request.form.get("api_key")
    return value if isinstance(value, str) and value else None


def _require_admin(config: Config) -> None:
    if not config.admin_key:
        raise Forbidden("the admin endpoints are disabled: set ADMIN_KEY to enable them",
                        "admin_disabled")
    expected = hashlib.sha256(config.admin_key.encode()).digest()
    given = hashlib.sha256((bearer() or "").encode()).digest()
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("the admin endpoints need 'Authorization: Bearer <ADMIN_KEY>'",
                           "invalid_admin_key")


def _require_client_key(keys: KeyRing) -> ClientKey:
    presented = presented_key()
    if presented is None:
        raise Unauthorized("this service needs an API key: send 'Authorization: Bearer <key>' "
                           "(or the api_key field)", "missing_api_key")
    client = keys.match(presented)
    if client is None:
        raise Unauthorized("the API key is not valid", "invalid_api_key")
    return client


def init_app(app: Flask) -> None:
    """Check keys and rate limits before every request; put RateLimit-* headers on every answer."""
    from .services import current

    @app.before_request
    def guard() -> None:
        path = request.path
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return
        services = current()
        if path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"):
            _require_admin(services.config)
            return
        client = None
        if services.keys.enabled:
            client = _require_client_key(services.keys)
        if path not in UNLIMITED_PATHS:
            services.limiter.check(client.id if client else None,
                                   client_ip(request.remote_addr,
                                             request.headers.get("X-Forwarded-For"),
                                             services.trusted_proxies))

    @app.after_request
    def rate_limit_headers(response):
        from .limits import headers_for_request
        for name, value in headers_for_request().items():
            response.headers[name] = value
        return response
