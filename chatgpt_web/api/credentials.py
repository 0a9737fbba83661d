"""Who a request runs as: the caller's own ChatGPT access token, or the server's account pool.

A `Grant` is what a face needs to start an answer; `Grant.start()` hides whether the answer runs
on the caller's token or on a pooled account with failover. `authenticate()` builds the grant of
an OpenAI-style request from its `Authorization: Bearer ...` header.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import request

from .. import chat
from ..errors import Unauthorized
from ..pool import AccountPool
from ..services import Services
from ..tokens import ensure_not_expired
from ..upstream.conversation import ChatRequest, ConversationClient
from ..upstream.endpoints import Upstream, from_base_url

MAX_TOKEN_LENGTH = 20000


@dataclass(frozen=True)
class Grant:
    """What an authenticated request may use: an access token (or the account pool) and the
    backend to reach."""

    access_token: str | None
    upstream: Upstream
    pool: AccountPool | None = None

    def start(self, client: ConversationClient, request: ChatRequest) -> chat.Answer:
        """Start the answer on the caller's token, or on a pooled account with failover."""
        if self.pool is not None:
            return self.pool.start_answer(client, request, self.upstream)
        return chat.start_answer(client, self.access_token, request, self.upstream)


def bearer_token() -> str:
    """The token of the request's `Authorization: Bearer <token>` header.

    :raise Unauthorized: code missing_token when the header is absent, empty or not Bearer.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("no access token: send 'Authorization: Bearer <ChatGPT access token>' "
                           "(with the openai SDK, pass it as api_key)", "missing_token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("the bearer token is too long to be an access token", "invalid_token")
    return token


def authenticate(services: Services) -> Grant:
    """The grant of the current request.

    :raise Unauthorized: missing_token, invalid_token, or token_expired (a JWT past its exp is
        refused before any upstream call).
    """
    access_token = bearer_token()
    ensure_not_expired(access_token)
    return Grant(access_token, from_base_url(services.config.base_url))
