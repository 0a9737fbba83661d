"""Where to connect: the configured base URL, or a caller's `reverse_proxy` after the SSRF guard.

A `reverse_proxy` is a full conversation URL (`https://host/api/conversation` or
`https://host/backend-api/conversation`); sibling endpoints are found by replacing the trailing
`/conversation`. Because the caller picks where this server connects, a per-request reverse proxy
is accepted only if it starts with an operator-allowed prefix (CHATGPT_ALLOWED_PROXIES), or if it is
https and every address its host resolves to is public. The checked addresses are pinned with curl's
RESOLVE option, so a second DNS answer cannot redirect the connection (DNS rebinding).
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import BadRequest

Resolver = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True)
class Upstream:
    """An API root such as `https://chatgpt.com/backend-api`, plus DNS pins for the connection."""

    api_root: str
    resolve: tuple[str, ...] = ()
    # The ChatGPT origin itself has a home page to read the build id from; a reverse proxy need not.
    has_home_page: bool = False

    def url(self, path: str) -> str:
        """Absolute URL of an endpoint, e.g. `url("/sentinel/chat-requirements")`."""
        return self.api_root + path

    @property
    def origin(self) -> str:
        """Scheme and host of the API root (used for Origin/Referer)."""
        parts = urlsplit(self.api_root)
        return f"{parts.scheme}://{parts.netloc}"


def from_base_url(base_url: str) -> Upstream:
    """The operator-configured backend (CHATGPT_BASE_URL), trusted as given."""
    return Upstream(base_url.rstrip("/") + "/backend-api", has_home_page=True)


def system_resolver(host: str, port: int) -> list[str]:
    """All addresses `host` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_allowed_proxy(url: str, prefixes: Sequence[str]) -> bool:
    """True if `url` starts with one of the operator-allowed prefixes (at a path boundary)."""
    for prefix in prefixes:
        # A bare prefix must end at a path boundary: "https://a.com" must not admit "https://a.com.evil".
        if url == prefix or (url.startswith(prefix)
                             and (prefix.endswith("/") or url[len(prefix)] in "/?")):
            return True
    return False


def from_reverse_proxy(reverse_proxy: str, allowed_prefixes: Sequence[str],
                       resolver: Resolver = system_resolver) -> Upstream:
    """Validate a caller's reverse_proxy conversation URL and return where to connect.

    :raise BadRequest: malformed URL, not https, or a host that resolves to a non-public address.
    """
    url = reverse_proxy.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("reverse_proxy must be an absolute http(s) URL", "invalid_reverse_proxy")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise BadRequest("reverse_proxy must not contain credentials, a query or a fragment",
                         "invalid_reverse_proxy")
    path = parts.path.rstrip("/")
    if not path.endswith("/conversation"):
        raise BadRequest("reverse_proxy must be a conversation URL ending in /conversation, such "
                         "as https://host/backend-api/conversation", "invalid_reverse_proxy")
    api_root = f"{parts.scheme}://{parts.netloc}{path[: -len('/conversation')]}"

    if is_allowed_proxy(url, allowed_prefixes):
        return Upstream(api_root)
    if parts.scheme != "https":
        raise BadRequest("reverse_proxy must use https unless its prefix is listed in "
                         "CHATGPT_ALLOWED_PROXIES", "reverse_proxy_not_allowed")
    port = parts.port or 443
    try:
        addresses = list(resolver(parts.hostname, port))
    except (OSError, UnicodeError):
        raise BadRequest("reverse_proxy host could not be resolved", "invalid_reverse_proxy") from None
    if not addresses or not all(_is_public(address) for address in addresses):
        raise BadRequest("reverse_proxy resolves to a private or reserved address; list it in "
                         "CHATGPT_ALLOWED_PROXIES to allow it", "reverse_proxy_not_allowed")
    pinned = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    return Upstream(api_root, resolve=(f"{parts.hostname}:{port}:{pinned}",))
