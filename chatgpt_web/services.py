"""The long-lived objects one app shares between requests, built once from the Config."""
from __future__ import annotations

from functools import cached_property

from .config import Config
from .store import Store, open_store


class Services:
    """Lazily built shared services; `current()` finds the ones of the running app."""

    def __init__(self, config: Config):
        self.config = config

    @cached_property
    def store(self) -> Store:
        """Token cache, counters and pins (built on first use so import never touches disk)."""
        return open_store(self.config)


def current() -> Services:
    """The Services of the app handling the current request."""
    from flask import current_app
    return current_app.extensions["chatgpt_web"]
