"""Who a request runs as: the caller's own ChatGPT access token, or the server's account pool.

A `Grant` is what a face needs to start an answer; `Grant.start_answer()` hides whether the
answer runs on the caller's token or on a pooled account with failover. `authenticate()` builds
the grant of an OpenAI-style request from its `Authorization: Bearer ...` header: a ChatGPT access
token, or, when API keys are on, one of the service's keys, which runs the request on the pool.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from .. import usage
from ..access import bearer, client_key, limit_pooled_request, require_same_origin
from ..answers import Answer
from ..errors import ApiError, ServiceUnavailable, Unauthorized
from ..key_policy import KeyPolicy
from ..ledger import Ledger
from ..moderation import Moderator
from ..pool import AccountPool
from ..services import Services
from ..tokens import ensure_not_expired
from ..upstream.conversation import ConversationClient, ConversationRequest
from ..upstream.endpoints import Upstream, from_base_url

log = logging.getLogger(__name__)
MAX_TOKEN_LENGTH = 20000


@dataclass(frozen=True)
class Grant:
    """What an authenticated request may use: an access token (or the account pool) and the
    backend to reach."""

    access_token: str | None
    upstream: Upstream
    pool: AccountPool | None = None
    # The client key id a pooled answer runs for: its new conversations are recorded as its own.
    owner: str | None = None
    # Where the owner's answers are counted (the usage ledger), when it has an owner.
    ledger: Ledger | None = None
    # Screens the prompt before any account sees it (MODERATION), when on.
    moderator: Moderator | None = None
    # The owner's scopes: its token quotas are held before an answer starts (ledger.py).
    policy: KeyPolicy | None = None

    def start_answer(self, client: ConversationClient, request: ConversationRequest, *,
                     follow_up: bool = False) -> Answer:
        """Start the answer on the caller's token, or on a pooled account with failover.

        `follow_up`: a second answer for the same caller request (a structured-output retry):
        its tokens are counted, the request not again.

        :raise ApiError: the answer failed before its first item (see answers.Answer.start).
        :raise ContentBlocked: MODERATION=block and the prompt matched.
        :raise RateLimited: quota_exhausted, the prompt does not fit the owner's token quota.
        """
        if self.moderator is not None:
            self.moderator.check(message.content for message in request.messages)
        tally = None
        if self.ledger is not None and self.owner is not None:
            tally = _Tally(self.ledger, self.owner, request, requests=0 if follow_up else 1)
            tally.hold = self.ledger.hold_tokens(self.owner, self.policy, tally.prompt)
        try:
            if self.pool is not None:
                answer = self.pool.run(client, request, self.upstream, owner=self.owner)
            else:
                answer = Answer.start(client, self.access_token, request, self.upstream)
        except BaseException:
            if tally is not None:
                tally.give_back()
            raise
        if tally is not None:
            answer.on_complete(tally.record)
            answer.on_close(tally.give_back)
        return answer


class _Tally:
    """One answer's entry in its key's ledger (counts only, no text): the tokens held for it
    before it starts, replaced by those it used once complete, or given back if it never is."""

    def __init__(self, ledger: Ledger, owner: str, request: ConversationRequest, requests: int):
        self.ledger, self.owner, self.model, self.requests = ledger, owner, request.model, requests
        self.prompt = usage.count_messages(((m.role, m.content) for m in request.messages),
                                           request.model)
        self.hold: str | None = None
        self.settled = False

    def record(self, completion) -> None:
        self.settled = True
        try:
            self.ledger.record(self.owner, self.model, "web", self.prompt,
                               usage.count_text(completion.text or "", self.model),
                               requests=self.requests, hold=self.hold)
        except ApiError as error:  # the answer is already given: a ledger outage must not fail it
            log.warning("usage of key %s not recorded (%s)", self.owner, error.code)

    def give_back(self) -> None:
        if self.settled or self.hold is None:
            return
        self.settled = True
        try:
            self.ledger.drop_hold(self.owner, self.hold)
        except ApiError as error:  # the hold lapses by itself (ledger.hold_ttl)
            log.warning("token hold of key %s not given back (%s)", self.owner, error.code)


def bearer_token() -> str:
    """The token of the request's `Authorization: Bearer <token>` header.

    :raise Unauthorized: code missing_token when the header is absent, empty or not Bearer.
    """
    token = bearer()
    if token is None:
        raise Unauthorized("no access token: send 'Authorization: Bearer <ChatGPT access token>' "
                           "(with the openai SDK, pass it as api_key)", "missing_token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the bearer token is too long to be an access token", "invalid_token")
    return token


def check_caller(services: Services) -> None:
    """Refuse a caller who may not use the service (for endpoints that need no upstream).

    With API keys on, access.py has already checked the key; otherwise the bearer must be an
    access token that is not expired. :raise Unauthorized: as `authenticate`.
    """
    if not services.keys.enabled and not _pool_serves_anyone(services):
        ensure_not_expired(bearer_token())


def _pool_serves_anyone(services: Services) -> bool:
    """No API keys, accounts configured and no token given: the pool serves the caller, as
    /send_message does (the operator was warned at start-up that anyone can use the pool)."""
    return services.pool is not None and bearer() is None


def authenticate(services: Services) -> Grant:
    """The grant of the current request: the pool when API keys are on, else the bearer token,
    else (no token) the pool if there is one.

    :raise ServiceUnavailable: API keys are on but no accounts are configured.
    :raise Unauthorized: missing_token, invalid_token, or token_expired (a JWT past its exp is
        refused before any upstream call).
    """
    upstream = from_base_url(services.config.base_url)
    if services.keys.enabled:
        # The bearer was one of the service's own keys (checked by access.py): its requests run
        # on the server-held accounts, whose tokens the caller never sees.
        if services.pool is None:
            raise ServiceUnavailable("API keys are enabled but no ACCOUNTS_FILE holds accounts to "
                                     "serve them", "no_account_available")
        limit_pooled_request()
        return Grant(None, upstream, services.pool, owner=client_key().id,
                     ledger=services.ledger, moderator=services.moderator,
                     policy=client_key().policy)
    if _pool_serves_anyone(services):
        # No keys: a cross-site page must not drive the pool (a text/plain form can carry JSON).
        require_same_origin(services.config.cors_origins)
        limit_pooled_request()
        return Grant(None, upstream, services.pool, moderator=services.moderator)
    access_token = bearer_token()
    ensure_not_expired(access_token)
    return Grant(access_token, upstream, moderator=services.moderator)
