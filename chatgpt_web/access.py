"""The guard in front of every request: the client key, the admin key, the client's IP, limits.

When API_KEYS or API_KEYS_FILE is set, every endpoint except OPEN_PATHS needs one of the keys
(keys.py), as `Authorization: Bearer <key>` or, on the original form endpoints, the `api_key`
field. `/admin/*` needs ADMIN_KEY instead and is closed when none is set.

The guard runs before every request (`init_app`) and then asks the rate limiter (limits.py) about
the client key and the client IP; the IP honours X-Forwarded-For only from TRUSTED_PROXIES. The
limiter's decision is kept on `flask.g` for the RateLimit-* headers of the answer.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress

from flask import Flask, g, request

from .config import Config
from .errors import Forbidden, Unauthorized
from .keys import ClientKey, KeyRing
from .limits import headers_for
from .services import current

# Reachable without a key: a load balancer's probes, the playground page and the console page
# (the pages hold no data: their scripts ask for the key and send it with every call).
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/admin"})
# The pages' scripts and styles (api/pages.py).
OPEN_PREFIXES = ("/static/",)
# Need a key but are not rate limited: a Prometheus scrape every 15 s would exhaust 120/hour.
UNLIMITED_PATHS = frozenset({"/metrics"})
ADMIN_PREFIX = "/admin"


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


def client_key() -> ClientKey | None:
    """The client key the current request presented (None when keys are off)."""
    return g.get("client_key")


def init_app(app: Flask) -> None:
    """Check keys and rate limits before every request; put RateLimit-* headers on every answer."""
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
        g.client_key = client
        if path not in UNLIMITED_PATHS:
            g.rate_limit = services.limiter.check(
                client.id if client else None,
                client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                          services.config.trusted_proxies))

    @app.after_request
    def rate_limit_headers(response):
        decision = g.get("rate_limit")
        if decision is not None:
            response.headers.update(headers_for(decision))
        return response
