"""What a relay answer may not carry: upstream secrets in texts, and upstream headers.

Exact replacement of every configured secret (upstream keys, header values, proxy URLs) and of
the fragments the official API echoes (first 8 and last 4 characters of a key), then patterns for
what no configuration names (other keys, organisation, project and user ids), then the upstream
host names when `hide_upstreams` is on. Exact strings first: a generic "looks like a host" rule
corrupts ordinary text (field paths such as `thinking.type`).
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"
_PATTERNS = re.compile(
    r"sk-[A-Za-z0-9_*\-]{8,}|Bearer\s+\S+|org-[A-Za-z0-9]{20,}|proj_[A-Za-z0-9]{20,}"
    r"|user-[A-Za-z0-9]{20,}|api_key[:=]\s*\S+|AIza[0-9A-Za-z_\-]{20,}")
# Sentences of the official API's errors that speak about the server's own account.
_SENTENCES = re.compile(
    r"\s*(You can find your API key at \S+|Please check your plan and billing details[^.]*\."
    r"|please check your plan and billing details[^.]*\."
    r"|For more information on this error, read the docs: \S+)", re.IGNORECASE)
# Upstream response headers a client may see; everything else (openai-organization,
# openai-project, x-ratelimit-* of our key, set-cookie, server, cf-*) stays behind.
ALLOWED_HEADERS = ("content-type", "content-disposition")


class Scrubber:
    """Removes the configured secrets (and the patterns above) from texts."""

    def __init__(self, secrets, hosts=()):
        exact = set()
        for secret in secrets:
            if len(secret) >= 8:
                exact.add(secret)
                exact.add(secret[:8])  # the fragments the official API echoes in a 401
                if len(secret) >= 16:
                    exact.add(secret[-4:])
        # Longest first, so a fragment never splits a full secret before it is replaced.
        self._exact = sorted(exact, key=len, reverse=True)
        self._hosts = sorted({h for h in hosts if h}, key=len, reverse=True)

    @classmethod
    def for_plan(cls, plan, extra=()) -> Scrubber:
        hosts = []
        if plan.hide_upstreams:
            for upstream in plan.upstreams.values():
                parts = urlsplit(upstream.base_url)
                hosts += [upstream.base_url, parts.netloc, parts.hostname or ""]
        return cls([*plan.secrets(), *extra], hosts)

    def text(self, value: str) -> str:
        for secret in self._exact:
            if secret in value:
                value = value.replace(secret, MASK)
        value = _PATTERNS.sub(MASK, value)
        value = _SENTENCES.sub("", value)
        for host in self._hosts:
            if host in value:
                value = value.replace(host, "upstream")
        return value.strip()


def client_headers(upstream_headers: dict[str, str]) -> dict[str, str]:
    """The upstream response headers a client may see (lower-case names in, kept as given)."""
    return {name: upstream_headers[name] for name in ALLOWED_HEADERS if name in upstream_headers}
