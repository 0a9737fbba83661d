"""Who a request runs as: the caller's own ChatGPT access token, or the server's account pool.

A `Grant` is what a face needs to start an answer; `Grant.start_answer()` hides whether the
answer runs on the caller's token or on a pooled account with failover. `authenticate()` builds
the grant of an OpenAI-style request from its `Authorization: Bearer ...` header: a ChatGPT access
token, or, when API keys are on, one of the service's keys, which runs the request on the pool.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..access import bearer, client_key, limit_pooled_request, require_same_origin
from ..answers import Answer
from ..errors import ServiceUnavailable, Unauthorized
from ..pool import AccountPool
from ..services import Services
from ..tokens import ensure_not_expired
from ..upstream.conversation import ConversationClient, ConversationRequest
from ..upstream.endpoints import Upstream, from_base_url

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

    def start_answer(self, client: ConversationClient, request: ConversationRequest) -> Answer:
        """Start the answer on the caller's token, or on a pooled account with failover.

        :raise ApiError: the answer failed before its first item (see answers.Answer.start).
        """
        if self.pool is not None:
            return self.pool.run(client, request, self.upstream, owner=self.owner)
        return Answer.start(client, self.access_token, request, self.upstream)


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
        return Grant(None, upstream, services.pool, owner=client_key().id)
    if _pool_serves_anyone(services):
        # No keys: a cross-site page must not drive the pool (a text/plain form can carry JSON).
        require_same_origin(services.config.cors_origins)
        limit_pooled_request()
        return Grant(None, upstream, services.pool)
    access_token = bearer_token()
    ensure_not_expired(access_token)
    return Grant(access_token, upstream)
