"""Screening prompts before they reach an account or an upstream key (MODERATION=off|flag|block).

Two engines judge (MODERATION_ENGINE):

* `words`: a local word list, MODERATION_WORDS_FILE: one entry a line, `category: word or
  phrase` (or a bare word, category `blocked`); blank lines and `#` comments are skipped. A prompt
  matches an entry when the entry appears in it as whole words, ignoring case.
* `relay`: the OpenAI moderation API, `/v1/moderations` of the relay target that serves
  MODERATION_MODEL (UPSTREAMS_FILE). Its verdict on each text is kept MODERATION_CACHE_SECONDS
  in the Store under a keyed hash of the text (never the text), so a repeated prompt (a chat's
  earlier messages) is not sent again. When the check itself fails (no upstream, timeout, a
  broken answer), MODERATION_ON_ERROR decides: `allow` lets the prompt through, `block` refuses
  it with 503 `moderation_unavailable`.

`block` refuses a matching prompt with 400 `content_blocked` naming the categories; `flag` lets it
through, counts it and logs the categories. Neither ever logs or keeps the text. Every check's
time is observed in /metrics (chatgpt_web_moderation_seconds) and its result counted
(chatgpt_web_moderation_checks_total{result}: clean, flagged, blocked, error).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable, Iterable

from .errors import ApiError, ConfigError, ContentBlocked, ServiceUnavailable
from .metrics import MODERATION_CHECKS, MODERATION_SECONDS
from .store import Store

log = logging.getLogger(__name__)
DEFAULT_CATEGORY = "blocked"
MAX_ENTRIES = 100_000
CACHE_PREFIX = "modcache:v1:"
# Texts in one call to the moderation API (its documented batch limit is larger).
MAX_BATCH = 32


class ModerationFailed(Exception):
    """The engine could not judge (an upstream error, a broken answer); `code` says why."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def read_words_file(path: str) -> dict[str, re.Pattern]:
    """Category -> one pattern of its entries. :raise ConfigError: unreadable or empty file."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"MODERATION_WORDS_FILE cannot be read ({type(exc).__name__})") from None
    entries: dict[str, list[str]] = {}
    for line in lines[:MAX_ENTRIES]:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        category, colon, phrase = line.partition(":")
        if not colon or not phrase.strip():
            category, phrase = DEFAULT_CATEGORY, line
        words = phrase.strip().lower().split()
        entries.setdefault(category.strip().lower() or DEFAULT_CATEGORY, []).append(
            r"\s+".join(re.escape(word) for word in words))
    if not entries:
        raise ConfigError("MODERATION_WORDS_FILE holds no entries")
    return {category: re.compile(r"(?<!\w)(?:" + "|".join(sorted(set(patterns))) + r")(?!\w)",
                                 re.IGNORECASE)
            for category, patterns in entries.items()}


class WordList:
    """The `words` engine: categories whose pattern any text matches."""

    def __init__(self, categories: dict[str, re.Pattern]):
        self.categories = categories

    def flagged(self, texts: list[str]) -> list[str]:
        found = set()
        for text in texts:
            for category, pattern in self.categories.items():
                if category not in found and pattern.search(text):
                    found.add(category)
        return sorted(found)


class ModerationApi:
    """The `relay` engine: the OpenAI moderation API, reached through `ask(body) -> bytes` (the
    relay's /v1/moderations; raises ApiError when no upstream answered), with a verdict cache.

    Cache keys are an HMAC of the model and the text under `salt` (derived from the relay's
    secrets), so that whoever reads the Store cannot test guesses of what was asked.
    """

    def __init__(self, ask: Callable[[dict], bytes], model: str, store: Callable[[], Store],
                 cache_seconds: int, salt: bytes):
        self.ask = ask
        self.model = model
        self._store = store
        self.cache_seconds = cache_seconds
        self.salt = salt

    def _cache_key(self, text: str) -> str:
        digest = hmac.new(self.salt, f"{self.model}\0{text}".encode(), hashlib.sha256)
        return CACHE_PREFIX + digest.hexdigest()

    def flagged(self, texts: list[str]) -> list[str]:
        """The categories the API flags in any of `texts`. :raise ModerationFailed."""
        found: set[str] = set()
        missing = []
        store = self._store() if self.cache_seconds else None
        for text in dict.fromkeys(text for text in texts if text.strip()):
            cached = store.get(self._cache_key(text)) if store is not None else None
            if isinstance(cached, list):
                found.update(cached)
            else:
                missing.append(text)
        for start in range(0, len(missing), MAX_BATCH):
            batch = missing[start:start + MAX_BATCH]
            for text, categories in zip(batch, self._judge(batch), strict=True):
                found.update(categories)
                if store is not None:
                    store.set(self._cache_key(text), categories, expire=self.cache_seconds)
        return sorted(found)

    def _judge(self, texts: list[str]) -> list[list[str]]:
        """The flagged categories of each text, from one call. :raise ModerationFailed."""
        try:
            answer = self.ask({"model": self.model, "input": texts})
        except ApiError as error:
            raise ModerationFailed(error.code) from None
        try:
            results = json.loads(answer)["results"]
            verdicts = [_categories(result) for result in results]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ModerationFailed("bad_moderation_answer") from None
        if len(verdicts) != len(texts):
            raise ModerationFailed("bad_moderation_answer")
        return verdicts


def _categories(result: dict) -> list[str]:
    """The flagged category names of one result (`flagged` alone counts as "flagged")."""
    if not isinstance(result, dict) or not isinstance(result.get("flagged"), bool):
        raise TypeError("not a moderation result")
    if not result["flagged"]:
        return []
    categories = result.get("categories")
    names = sorted(name for name, on in (categories or {}).items()
                   if on is True and isinstance(name, str) and len(name) <= 64)
    return names or ["flagged"]


class Moderator:
    """Checks prompt texts with an engine in `mode` (flag or block)."""

    def __init__(self, mode: str, engine, on_error: str = "allow"):
        self.mode = mode
        self.engine = engine
        self.on_error = on_error

    @classmethod
    def from_config(cls, config, ask: Callable[[dict], bytes] | None = None,
                    store: Callable[[], Store] | None = None,
                    salt: bytes = b"") -> Moderator | None:
        """The moderator of MODERATION, None when it is off. `ask`, `store` and `salt` serve
        the relay engine (services.py builds them from the relay).

        :raise ConfigError: the engine's word list is unreadable, or the relay is missing.
        """
        if config.moderation == "off":
            return None
        if config.moderation_engine_name == "relay":
            if ask is None or store is None:
                raise ConfigError("MODERATION_ENGINE=relay needs UPSTREAMS_FILE")
            engine = ModerationApi(ask, config.moderation_model, store,
                                   config.moderation_cache_seconds, salt)
        else:
            if not config.moderation_words_file:
                raise ConfigError(f"MODERATION={config.moderation} needs MODERATION_WORDS_FILE")
            engine = WordList(read_words_file(config.moderation_words_file))
        return cls(config.moderation, engine, config.moderation_on_error)

    def flagged(self, texts: Iterable[str]) -> list[str]:
        """The categories any of `texts` matches, sorted. :raise ModerationFailed."""
        return self.engine.flagged(list(texts))

    def check(self, texts: Iterable[str]) -> None:
        """Screen `texts`.

        :raise ContentBlocked: in block mode, when a category matched.
        :raise ServiceUnavailable: moderation_unavailable, when the engine failed and
            MODERATION_ON_ERROR=block.
        """
        started = time.monotonic()
        try:
            categories = self.flagged(texts)
        except ModerationFailed as failure:
            MODERATION_SECONDS.observe(time.monotonic() - started)
            MODERATION_CHECKS.labels("error").inc()
            log.warning("moderation check failed (%s): prompt %s", failure.code,
                        "refused" if self.on_error == "block" else "let through")
            if self.on_error == "block":
                raise ServiceUnavailable("the prompt could not be screened by this service's "
                                         "moderation; retry later", "moderation_unavailable",
                                         headers={"Retry-After": "5"}) from None
            return
        MODERATION_SECONDS.observe(time.monotonic() - started)
        if not categories:
            MODERATION_CHECKS.labels("clean").inc()
            return
        MODERATION_CHECKS.labels("blocked" if self.mode == "block" else "flagged").inc()
        # The categories only: the text is the caller's and is never logged.
        log.warning("moderation %s a prompt: categories=%s",
                    "blocked" if self.mode == "block" else "flagged", ",".join(categories))
        if self.mode == "block":
            raise ContentBlocked("the prompt was blocked by this service's moderation "
                                 f"(categories: {', '.join(categories)})", "content_blocked",
                                 param="messages")
