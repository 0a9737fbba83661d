"""Screening prompts before they reach an account (MODERATION=off|flag|block).

The check reads a local word list, MODERATION_WORDS_FILE: one entry a line, `category: word or
phrase` (or a bare word, category `blocked`); blank lines and `#` comments are skipped. A prompt
matches an entry when the entry appears in it as whole words, ignoring case. `block` refuses a
matching prompt with 400 `content_blocked` naming the categories; `flag` lets it through, counts
it and logs the categories. Neither ever logs or keeps the text. Every check's time is observed
in /metrics (chatgpt_web_moderation_seconds) and its result counted
(chatgpt_web_moderation_checks_total{result}).
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable

from .errors import ConfigError, ContentBlocked
from .metrics import MODERATION_CHECKS, MODERATION_SECONDS

log = logging.getLogger(__name__)
DEFAULT_CATEGORY = "blocked"
MAX_ENTRIES = 100_000


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


class Moderator:
    """Checks prompt texts against the word list in `mode` (flag or block)."""

    def __init__(self, mode: str, categories: dict[str, re.Pattern]):
        self.mode = mode
        self.categories = categories

    @classmethod
    def from_config(cls, config) -> Moderator | None:
        """The moderator of MODERATION, None when it is off.

        :raise ConfigError: MODERATION is on without a readable MODERATION_WORDS_FILE.
        """
        if config.moderation == "off":
            return None
        if not config.moderation_words_file:
            raise ConfigError(f"MODERATION={config.moderation} needs MODERATION_WORDS_FILE")
        return cls(config.moderation, read_words_file(config.moderation_words_file))

    def flagged(self, texts: Iterable[str]) -> list[str]:
        """The categories any of `texts` matches, sorted."""
        found = set()
        for text in texts:
            for category, pattern in self.categories.items():
                if category not in found and pattern.search(text):
                    found.add(category)
        return sorted(found)

    def check(self, texts: Iterable[str]) -> None:
        """Screen `texts`. :raise ContentBlocked: in block mode, when a category matched."""
        started = time.monotonic()
        categories = self.flagged(texts)
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
