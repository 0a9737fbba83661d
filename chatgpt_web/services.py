"""The long-lived objects one app shares between requests, built once from the Config."""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TypeVar

from .account_models import AccountModels
from .alerts import AlertWatcher, WebhookSender
from .config import Config
from .image_links import ImageLinks
from .keys import KeyRing
from .ledger import Ledger
from .limits import RateLimiter
from .models import ModelCatalog
from .moderation import Moderator
from .pool import AccountPool, load_accounts
from .relay.plan import RelayPlan
from .relay.service import RelayService
from .store import Store, open_store
from .tokens import TokenProvider
from .transport import plain_session
from .upstream.conversation import ConversationClient
from .upstream.downloads import DownloadClient
from .upstream.endpoints import from_base_url
from .upstream.history import HistoryClient
from .upstream.pow import ProofOfWorkSolver

T = TypeVar("T")


class Services:
    """Lazily built shared services; `current()` finds the ones of the running app.

    Each is built once on first use (so importing the app touches no disk), under a lock: on
    Python 3.12+ (Vercel's runtime) functools.cached_property no longer locks, and two requests
    racing to build the pool or the PoW process pool would each build one.
    """

    def __init__(self, config: Config, relay_plan: RelayPlan | None = None):
        self.config = config
        # UPSTREAMS_FILE, parsed at start by create_app (it resolves the env: references).
        self.relay_plan = relay_plan
        self._lock = threading.RLock()
        self._built: dict[str, object] = {}

    def _once(self, name: str, build: Callable[[], T]) -> T:
        if name not in self._built:
            with self._lock:
                if name not in self._built:
                    self._built[name] = build()
        return self._built[name]  # type: ignore[return-value]

    @property
    def store(self) -> Store:
        """Token cache, counters and pins (built on first use so import never touches disk)."""
        return self._once("store", lambda: open_store(self.config))

    @property
    def tokens(self) -> TokenProvider:
        """Access tokens from credentials, through the token cache in `store`."""
        return self._once("tokens", lambda: TokenProvider(self.config, self.store))

    @property
    def pool(self) -> AccountPool | None:
        """The server-held accounts of ACCOUNTS_FILE, or None when none are configured."""
        if not self.config.accounts_file:
            return None
        return self._once("pool", lambda: AccountPool(load_accounts(self.config.accounts_file),
                                                      self.store, self.tokens,
                                                      models=self.account_models))

    @property
    def account_models(self) -> AccountModels:
        """The model lists of the pooled accounts (GET /backend-api/models on CHATGPT_BASE_URL,
        never on a caller's reverse_proxy), kept in `store`."""
        upstream = from_base_url(self.config.base_url)
        return self._once("account_models", lambda: AccountModels(
            self.store, lambda access_token: self.history.models(access_token, upstream)))

    @property
    def keys(self) -> KeyRing:
        """The client keys of API_KEYS, API_KEYS_FILE, KEYS_FILE and the Store (keys.py)."""
        return self._once("keys", lambda: KeyRing.from_config(self.config).attach(
            lambda: self.store))

    @property
    def moderator(self) -> Moderator | None:
        """The prompt screen of MODERATION (None when off): reads MODERATION_WORDS_FILE, or asks
        the relay's /v1/moderations (its verdicts kept in `store`)."""
        return self._once("moderator", self._build_moderator)

    def _build_moderator(self) -> Moderator | None:
        if self.relay_plan is None:
            return Moderator.from_config(self.config)
        timeout = self.config.moderation_timeout
        # Verdict cache keys are keyed with the relay's secrets: unguessable to a Store reader,
        # the same on every worker and instance that shares the UPSTREAMS_FILE.
        salt = hashlib.sha256("\0".join(self.relay_plan.secrets()).encode()).digest()
        return Moderator.from_config(
            self.config, ask=lambda body: self.relay.call("/moderations", body, timeout),
            store=lambda: self.store, salt=salt)

    @property
    def alerts(self) -> AlertWatcher | None:
        """Account health alerts to ALERT_WEBHOOK_URL (None without it or without a pool)."""
        config = self.config
        if not config.alert_webhook_url or self.pool is None:
            return None
        return self._once("alerts", lambda: AlertWatcher(
            self.pool, self.store,
            WebhookSender(config.alert_webhook_url, config.alert_webhook_allow, plain_session),
            min_healthy=config.alert_min_healthy, interval=config.alert_interval))

    @property
    def ledger(self) -> Ledger:
        """Client keys' quotas, concurrency leases and usage counters, in `store`."""
        return self._once("ledger", lambda: Ledger(
            self.store, self.config.usage_retention_days,
            metrics_per_key=self.config.metrics_per_key,
            # A token hold outlives a stuck answer by at most its deadline and a minute.
            hold_ttl=self.config.request_timeout + 60))

    @property
    def limiter(self) -> RateLimiter:
        """Per-key and per-IP request limits, counted in `store`."""
        config = self.config
        return self._once("limiter", lambda: RateLimiter(
            self.store, per_key=config.rate_limit, per_ip=config.rate_limit_ip,
            strategy=config.rate_limit_strategy, ipv6_prefix=config.rate_limit_ipv6_prefix,
            auth_failures=config.auth_failure_limit))

    @property
    def relay(self) -> RelayService | None:
        """The relay of UPSTREAMS_FILE (relay/), or None when no file is configured."""
        if self.relay_plan is None:
            return None
        return self._once("relay", lambda: RelayService(self.config, self.relay_plan,
                                                        self.store))

    @property
    def solver(self) -> ProofOfWorkSolver:
        """Proof-of-work solver; its process pool starts on the first hard challenge."""
        return self._once("solver", lambda: ProofOfWorkSolver(
            workers=self.config.pow_workers, max_difficulty=self.config.pow_max_difficulty))

    @property
    def conversations(self) -> ConversationClient:
        """The upstream conversation client every face uses."""
        return self._once("conversations", lambda: ConversationClient(self.config, self.solver,
                                                                    self.store))


    @property
    def history(self) -> HistoryClient:
        """The upstream conversation-history client (list, read, rename, delete, title)."""
        return self._once("history", lambda: HistoryClient(self.config))

    @property
    def image_links(self) -> ImageLinks:
        """Signed, expiring links to generated images (image_links.py)."""
        return self._once("image_links", lambda: ImageLinks(
            self.store, self.config.image_link_secret, self.config.image_link_ttl))

    @property
    def downloads(self) -> DownloadClient:
        """Reads generated files (images) from the accounts (upstream/downloads.py)."""
        return self._once("downloads", lambda: DownloadClient(self.config))

    @property
    def model_catalog(self) -> ModelCatalog:
        """The slugs each account's GET /backend-api/models lists, cached per account."""
        return self._once("model_catalog", ModelCatalog)

def current() -> Services:
    """The Services of the app handling the current request."""
    from flask import current_app
    return current_app.extensions["chatgpt_web"]
