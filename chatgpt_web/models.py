"""Which model names the service accepts, and the ChatGPT web slug each one is sent as.

The web backend names its models with slugs (`gpt-4o`, `o1-mini`, `text-davinci-002-render-sha`…,
protocol §2.2 "model"); OpenAI-API clients use the official names (`gpt-4o`, `gpt-3.5-turbo`,
`gpt-4o-2024-08-06`…). This module is the one place that maps between them:

* every web slug in WEB_SLUGS is accepted as itself;
* every official name in OPENAI_NAMES is sent as its web slug;
* a dated snapshot of a known name (`gpt-4o-2024-08-06`, `gpt-3.5-turbo-0125`) is sent as the
  undated name's slug, because the web backend has no snapshots;
* the operator's CHATGPT_DEFAULT_MODEL is accepted as itself, so a new web slug can be used before
  this table learns it;
* anything else is refused (404 `model_not_found`, like the official API). Passing unknown names
  through would let a typo silently answer with whatever model the backend falls back to, which
  is exactly the "model fidelity" complaint users raise about the peers (peers.md §3, need 15).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import NotFound

# Slugs the web backend accepted in 2024 (protocol §2.2): the 2024 models plus the legacy
# free-tier slug that chat2api still sends for gpt-3.5 names.
WEB_SLUGS: tuple[str, ...] = (
    "auto",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4",
    "o1",
    "o1-mini",
    "o1-preview",
    "o3-mini",
    "text-davinci-002-render-sha",
)

# Official API name -> web slug. Names equal to a slug are listed only in WEB_SLUGS.
OPENAI_NAMES: dict[str, str] = {
    "chatgpt-4o-latest": "gpt-4o",
    "gpt-4-turbo": "gpt-4",
    "gpt-4-turbo-preview": "gpt-4",
    "gpt-4-32k": "gpt-4",
    # The web backend retired gpt-3.5; chat2api maps every gpt-3.5 name to the free-tier slug
    # (protocol §2.2 "model"), which the backend serves with its current free model.
    "gpt-3.5-turbo": "text-davinci-002-render-sha",
    "gpt-3.5-turbo-16k": "text-davinci-002-render-sha",
}

# `-2024-08-06` or `-0125` style snapshot suffixes of the official API.
_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")

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
