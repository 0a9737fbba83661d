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
from urllib.parse import unquote, urlsplit

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


# IPv6 ranges that are never a public reverse proxy, whatever they embed: site-local (fec0::/10,
# deprecated but still routed by some stacks) and the local-use NAT64 prefix (RFC 8215), whose
# IPv4 part may sit anywhere in the address.
_NEVER_PUBLIC_V6 = (ipaddress.IPv6Network("fec0::/10"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_HOST_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the forms that carry one:
    IPv4-mapped (::ffff:a.b.c.d), IPv4-translated (::ffff:0:a.b.c.d), IPv4-compatible
    (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) or 6to4 (2002:aabb:ccdd::/48)."""
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if value >> 32 == 0xFFFF0000 or value >> 32 == 0 or ip in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return ip.sixtofour


def is_public(address: str) -> bool:
    """True if a connection to `address` reaches the public internet and nothing of ours.

    An IPv6 address that embeds an IPv4 address is judged by that IPv4 address: a NAT64 or
    6to4 gateway would deliver the connection there.
    """
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.version == 6:
        if any(ip in network for network in _NEVER_PUBLIC_V6):
            return False
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def normalised_url(url: str) -> str | None:
    """`url` with its scheme and host in lower case and a default port dropped, so that prefixes
    compare as URLs rather than as spellings; None if it is not a well-formed http(s) URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host += f":{port}"
    query = "?" + parts.query if parts.query else ""
    return f"{scheme}://{host}{parts.path}{query}"


def has_dot_segment(path: str) -> bool:
    """True if `path` holds a `.` or `..` segment, written plainly or percent-encoded (at any
    depth: %252e%252e), or a slash that appears only once decoded, or a backslash: servers
    behind a proxy differ in which of these they turn into segments, so none is accepted."""
    decoded = path
    for _ in range(4):  # each round removes one layer of percent-encoding; more is not real
        decoded = unquote(decoded)
    if decoded.count("/") != path.count("/") or "\\" in decoded:
        return True
    return any(segment.split(";")[0] in (".", "..") for segment in decoded.split("/"))


def is_allowed_proxy(url: str, prefixes: Sequence[str]) -> bool:
    """True if `url` starts with one of the operator-allowed prefixes (at a path boundary).

    Both sides are compared normalised, and a URL with a dot segment is never allowed: a
    proxy would resolve `/api/../backend-api/` to a path outside the prefix.
    """
    normal = normalised_url(url)
    if normal is None or has_dot_segment(urlsplit(normal).path):
        return False
    for raw_prefix in prefixes:
        prefix = normalised_url(raw_prefix)
        if prefix is None:
            continue
        # A bare prefix must end at a path boundary: "https://a.com" must not admit "https://a.com.evil".
        if normal == prefix or (normal.startswith(prefix)
                                and (prefix.endswith("/") or normal[len(prefix)] in "/?")):
            return True
    return False


def from_reverse_proxy(reverse_proxy: str, allowed_prefixes: Sequence[str],
                       resolver: Resolver = system_resolver) -> Upstream:
    """Validate a caller's reverse_proxy conversation URL and return where to connect.

    :raise BadRequest: malformed URL, a dot segment, a non-ASCII host, not https, or a host that
        resolves to a non-public address.
    """
    def conversation_path(parts) -> None:
        if not parts.path.rstrip("/").endswith("/conversation"):
            raise BadRequest("reverse_proxy must be a conversation URL ending in /conversation, "
                             "such as https://host/backend-api/conversation",
                             "invalid_reverse_proxy")

    destination = guard_destination(reverse_proxy, allowed_prefixes, resolver,
                                    name="reverse_proxy", setting="CHATGPT_ALLOWED_PROXIES",
                                    codes=("invalid_reverse_proxy", "reverse_proxy_not_allowed"),
                                    check_path=conversation_path)
    parts = urlsplit(destination.url)
    path = parts.path.rstrip("/")
    api_root = f"{parts.scheme}://{parts.netloc}{path[: -len('/conversation')]}"
    return Upstream(api_root, resolve=destination.resolve)


@dataclass(frozen=True)
class Destination:
    """A caller-chosen URL that passed the SSRF guard, with the DNS pins to connect with."""

    url: str
    resolve: tuple[str, ...] = ()


def guard_destination(raw_url: str, allowed_prefixes: Sequence[str],
                      resolver: Resolver = system_resolver, *, name: str, setting: str,
                      codes: tuple[str, str], check_path: Callable | None = None,
                      query_allowed: bool = False) -> Destination:
    """The SSRF guard for any URL a caller makes this server connect to (a reverse_proxy, an
    image URL): it must start with an operator-allowed prefix (`setting`), or be https to a host
    whose every address is public; those addresses are pinned (curl RESOLVE).

    `name` names the field in messages; errors are BadRequest with `codes` (for a malformed URL,
    for a refused destination). `check_path(parts)` may refuse the path first.
    """
    invalid, refused = codes
    url = raw_url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, unbalanced IPv6 brackets
        raise BadRequest(f"{name} is not a well-formed URL (host or port)", invalid) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{name} must be an absolute http(s) URL", invalid)
    if parts.username or parts.password or parts.fragment or (parts.query and not query_allowed):
        raise BadRequest(f"{name} must not contain credentials, a query or a fragment"
                         if not query_allowed else
                         f"{name} must not contain credentials or a fragment", invalid)
    if has_dot_segment(parts.path):
        raise BadRequest(f"{name} must not contain '.' or '..' path segments (plain or "
                         "percent-encoded)", refused)
    host = parts.hostname
    if not _is_ip_literal(host) and not set(host) <= _HOST_CHARACTERS:
        # curl would look up the IDNA form of a non-ASCII name, which the DNS pin below would
        # not cover; asking for the xn-- form keeps what is checked and what is reached the same.
        raise BadRequest(f"{name} host must be ASCII: write an international name in its "
                         "xn-- (IDNA) form", invalid)
    if check_path is not None:
        check_path(parts)

    if is_allowed_proxy(url, allowed_prefixes):
        return Destination(url)
    if parts.scheme != "https":
        raise BadRequest(f"{name} must use https unless its prefix is listed in {setting}",
                         refused)
    port = port or 443
    try:
        addresses = list(resolver(host, port))
    except (OSError, UnicodeError):
        raise BadRequest(f"{name} host could not be resolved", invalid) from None
    if not addresses or not all(is_public(address) for address in addresses):
        raise BadRequest(f"{name} resolves to a private or reserved address; list it in "
                         f"{setting} to allow it", refused)
    pinned = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    return Destination(url, resolve=(f"{host}:{port}:{pinned}",))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
