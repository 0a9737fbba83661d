"""The conversation headers (conversation.py `_headers`) as each call of a turn needs them.

Every call names its path under the site's API in `X-Openai-Target-Path` and `-Route`, as the
browser sends them (`target_headers`). The conversation write carries, beside the account's
headers, one-use tokens of its own: the sentinel's (`Openai-Sentinel-*`) and the conduit token
(`X-Conduit-Token`). The reads that follow a write, such as the hand-off's
`GET {api}/celsius/ws/user` (turn_topic.py) and its poll of `GET {api}/conversation/{id}`
(handoff.py), are sent by the browser without them (docs/protocol-requests.md, "Hand-off").
"""
from __future__ import annotations

# The site's API, as the browser names it in the target headers, whatever base URL is used.
BACKEND_API = "/backend-api"
# Header names are case-insensitive: compared in lower case.
_WRITE_TOKEN_PREFIXES = ("openai-sentinel", "x-conduit")


def without_write_tokens(headers: dict) -> dict:
    """A copy of `headers` without the write's sentinel and conduit tokens: a read's headers."""
    return {name: value for name, value in headers.items()
            if not name.lower().startswith(_WRITE_TOKEN_PREFIXES)}


def target_headers(path: str) -> dict:
    """The target headers of a call of `path` under the site's API (e.g. "/f/conversation")."""
    target = BACKEND_API + path
    return {"X-Openai-Target-Path": target, "X-Openai-Target-Route": target}
