"""Which model names the service accepts, and the ChatGPT web slug each one is sent as.

The web backend names its models with slugs (`auto`, `gpt-5-6`, `gpt-6-thinking`…; see
docs/protocol.md, "Models"); OpenAI-API clients use the official names (`gpt-5`, `gpt-5.1`, `o3`,
`gpt-4o-2024-08-06`…). This module is the one place that maps between them:

* every web slug in WEB_SLUGS is accepted as itself;
* every official name in OPENAI_NAMES is sent as its web slug (`gpt-5.6` as `gpt-5-6`);
* a dated snapshot of a known name (`gpt-4o-2024-08-06`, `gpt-3.5-turbo-0125`) is sent as the
  undated name's slug, because the web backend has no snapshots;
* the operator's CHATGPT_DEFAULT_MODEL, and the slugs an account's own `GET /backend-api/models`
  listed (ModelCatalog), are accepted as themselves, so a new web slug works before this table
  learns it;
* anything else is refused (404 `model_not_found`, like the official API). Passing unknown names
  through would let a typo silently answer with whatever model the backend falls back to.

OpenAI's `reasoning_effort` maps onto the web's `thinking_effort` (`thinking_effort()`).
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass

from .errors import BadRequest, NotFound

# Slugs the web backend accepts: the 2025-2026 families, the older models it still lists, and
# the legacy free-tier slug that chat2api still sends for gpt-3.5 names.
WEB_SLUGS: tuple[str, ...] = (
    "auto",
    "gpt-6", "gpt-6-thinking", "gpt-6-pro", "gpt-6-1-instant",
    "gpt-5-6", "gpt-5-6-thinking", "gpt-5-6-pro", "gpt-5-6-t-mini",
    "gpt-5-5", "gpt-5-5-instant", "gpt-5-5-thinking", "gpt-5-5-pro",
    "gpt-5-3", "gpt-5-3-mini", "gpt-5-2", "gpt-5-1",
    "gpt-5", "gpt-5-instant", "gpt-5-mini", "gpt-5-thinking",
    "gpt-4.5", "gpt-4.1", "gpt-4o", "gpt-4o-mini", "gpt-4",
    "o3", "o4-mini", "o4-mini-high", "o3-mini", "o1", "o1-mini", "o1-preview",
    "text-davinci-002-render-sha",
)

# Official API name -> web slug. Names equal to a slug are listed only in WEB_SLUGS.
OPENAI_NAMES: dict[str, str] = {
    # The API writes versions with a dot, the web with a dash.
    "gpt-5.1": "gpt-5-1",
    "gpt-5.2": "gpt-5-2",
    "gpt-5.3": "gpt-5-3",
    "gpt-5.5": "gpt-5-5",
    "gpt-5.6": "gpt-5-6",
    "gpt-6.1": "gpt-6-1-instant",
    "gpt-5-chat-latest": "gpt-5-instant",
    "gpt-5-nano": "gpt-5-mini",
    "gpt-4.1-mini": "gpt-4o-mini",
    "gpt-4.1-nano": "gpt-4o-mini",
    "chatgpt-4o-latest": "gpt-4o",
    "gpt-4-turbo": "gpt-4",
    "gpt-4-turbo-preview": "gpt-4",
    "gpt-4-32k": "gpt-4",
    # The web backend retired gpt-3.5; chat2api maps every gpt-3.5 name to the free-tier slug,
    # which the backend serves with its current free model.
    "gpt-3.5-turbo": "text-davinci-002-render-sha",
    "gpt-3.5-turbo-16k": "text-davinci-002-render-sha",
}

# OpenAI `reasoning_effort` -> web `thinking_effort` (the site takes only standard, extended and
# max; its "Medium/High/Very High" labels are these three). "none" asks for no thinking.
THINKING_EFFORTS: dict[str, str | None] = {
    "none": None,
    "minimal": "standard",
    "low": "standard",
    "medium": "extended",
    "high": "max",
    "xhigh": "max",
}

# `-2024-08-06` or `-0125` style snapshot suffixes of the official API.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")

# The official image models: on the web backend all are its one image tool (api/images.py).
# Without a `model`, the official API draws with dall-e-2, and so does the service.
IMAGE_MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "dall-e-3",
                "dall-e-2", "chatgpt-image-latest")
DEFAULT_IMAGE_MODEL = "dall-e-2"

# `created` of every listed model: a fixed date (2024-01-01) rather than per-model release dates,
# which the web backend does not publish. The field only has to be a stable integer.
LISTED_CREATED = 1704067200
OWNER = "chatgpt-web"


@dataclass(frozen=True)
class Model:
    """One name the API accepts and the web slug it is sent as."""

    id: str
    web_slug: str

    def to_dict(self) -> dict:
        """The official model object, plus `web_slug` (an extra field SDKs ignore)."""
        return {"id": self.id, "object": "model", "created": LISTED_CREATED,
                "owned_by": OWNER, "web_slug": self.web_slug}


def _known(extra_slugs: tuple[str, ...]) -> dict[str, str]:
    table = {slug: slug for slug in WEB_SLUGS}
    table.update(OPENAI_NAMES)
    for slug in extra_slugs:
        table.setdefault(slug, slug)
    return table


def list_models(extra_slugs: tuple[str, ...] = ()) -> list[Model]:
    """Every accepted name (web slugs first, then official names), for GET /v1/models."""
    return [Model(name, slug) for name, slug in _known(extra_slugs).items()]


def resolve(name: str, extra_slugs: tuple[str, ...] = ()) -> Model:
    """The Model for an API model name, snapshots mapped to their undated name.

    :raise NotFound: code model_not_found (param "model"), as the official API answers.
    """
    table = _known(extra_slugs)
    if name in table:
        return Model(name, table[name])
    undated = _SNAPSHOT.sub("", name)
    if undated != name and undated in table:
        return Model(name, table[undated])
    raise NotFound(f"The model `{name}` does not exist or you do not have access to it.",
                   "model_not_found", param="model")


def answered_as_asked(requested: str, served: str | None,
                      extra_slugs: tuple[str, ...] = ()) -> bool | None:
    """Whether an answer asked of the web slug `requested` came from that model.

    None when it cannot be told: `auto` lets the backend choose; no slug was reported; or the
    reported slug is not a public one (not in the table, not in `extra_slugs`: the account's own
    list). The backend's internal names (a 2026 turn's `server_ste_metadata` says `i-mini` while
    its answering message says `gpt-5-2`) name no model a caller could ask for, so they say
    nothing about a downgrade. A dated snapshot of the requested model is the same model.
    """
    if not served or requested == "auto":
        return None
    if served == requested or _SNAPSHOT.sub("", served) == requested:
        return True
    if served not in _known(extra_slugs):
        return None
    return False


def thinking_effort(reasoning_effort: object) -> str | None:
    """The web `thinking_effort` for an OpenAI `reasoning_effort` (None when not given).

    :raise BadRequest: code invalid_field (param "reasoning_effort") for any other value.
    """
    if reasoning_effort is None:
        return None
    if not isinstance(reasoning_effort, str) or reasoning_effort not in THINKING_EFFORTS:
        raise BadRequest(f"reasoning_effort must be one of {', '.join(THINKING_EFFORTS)}",
                         "invalid_field", param="reasoning_effort")
    return THINKING_EFFORTS[reasoning_effort]


class ModelCatalog:
    """The slugs each account's `GET /backend-api/models` lists, fetched at most once per `ttl`.

    Keyed by a hash that includes the credential (never the credential itself), at most
    `max_accounts` of them (the oldest are forgotten). `fetch` is called with no arguments and
    returns the slugs; a failed fetch keeps what was known and is retried after `retry` seconds,
    so a broken models endpoint costs at most one attempt per account per `retry`.
    """

    def __init__(self, *, ttl: float = 6 * 3600, retry: float = 300, max_accounts: int = 1024,
                 clock=time.monotonic):
        self.ttl, self.retry, self.max_accounts, self._clock = ttl, retry, max_accounts, clock
        self._known: dict[str, tuple[float, tuple[str, ...]]] = {}  # oldest entry first
        self._lock = threading.Lock()

    @staticmethod
    def key(credential: str) -> str:
        return hashlib.sha256(b"models\0" + credential.encode()).hexdigest()

    def slugs(self, credential: str, fetch) -> tuple[str, ...]:
        key, now = self.key(credential), self._clock()
        with self._lock:
            known = self._known.get(key)
        if known is not None and known[0] > now:
            return known[1]
        previous = known[1] if known else ()
        try:
            fetched = tuple(slug for slug in fetch() if isinstance(slug, str) and slug)
        except Exception:  # noqa: BLE001 - any failure: keep what we knew, try again later
            with self._lock:
                self._remember(key, (now + self.retry, previous))
            return previous
        with self._lock:
            self._remember(key, (now + self.ttl, fetched))
        return fetched

    def _remember(self, key: str, entry: tuple[float, tuple[str, ...]]) -> None:
        self._known.pop(key, None)
        self._known[key] = entry
        while len(self._known) > self.max_accounts:  # callers choose tokens: keep the newest
            del self._known[next(iter(self._known))]


def slugs_of(listing: object) -> tuple[str, ...]:
    """The slugs of a `GET /backend-api/models` answer (`models[].slug`, `default_model_slug`)."""
    if not isinstance(listing, dict):
        return ()
    found = [m.get("slug") for m in listing.get("models") or [] if isinstance(m, dict)]
    found.append(listing.get("default_model_slug"))
    return tuple(dict.fromkeys(slug for slug in found if isinstance(slug, str) and slug))
