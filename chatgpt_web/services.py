"""The long-lived objects one app shares between requests, built once from the Config."""
from __future__ import annotations

from functools import cached_property

from .config import Config
from .pool import AccountPool, load_accounts
from .store import Store, open_store
from .tokens import TokenProvider
from .upstream.conversation import ConversationClient
from .upstream.pow import ProofOfWorkSolver


class Services:
    """Lazily built shared services; `current()` finds the ones of the running app."""

    def __init__(self, config: Config):
        self.config = config

    @cached_property
    def store(self) -> Store:
        """Token cache, counters and pins (built on first use so import never touches disk)."""
        return open_store(self.config)

    @cached_property
    def tokens(self) -> TokenProvider:
        """Access tokens from credentials, through the token cache in `store`."""
        return TokenProvider(self.config, self.store)

    @cached_property
    def pool(self) -> AccountPool | None:
        """The server-held accounts of ACCOUNTS_FILE, or None when none are configured."""
        if not self.config.accounts_file:
            return None
        return AccountPool(load_accounts(self.config.accounts_file), self.store, self.tokens)

    @cached_property
    def solver(self) -> ProofOfWorkSolver:
        """Proof-of-work solver; its process pool starts on the first hard challenge."""
        return ProofOfWorkSolver(workers=self.config.pow_workers,
                                 max_difficulty=self.config.pow_max_difficulty)

    @cached_property
    def conversations(self) -> ConversationClient:
        """The upstream conversation client every face uses."""
        return ConversationClient(self.config, self.solver)


def current() -> Services:
    """The Services of the app handling the current request."""
    from flask import current_app
    return current_app.extensions["chatgpt_web"]
