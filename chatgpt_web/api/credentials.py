"""Who an OpenAI-style request runs as: the `Authorization: Bearer …` header -> an upstream grant.

Today the bearer is the caller's own ChatGPT access token, sent on to the configured backend.
This is the one function to change when the service gets API keys of its own and an account pool:
a service key will be looked up here and exchanged for a pooled account's token and upstream,
and the faces that call `authenticate()` will not change.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import request

from ..errors import Unauthorized
from ..services import Services
from ..tokens import ensure_not_expired
from ..upstream.endpoints import Upstream, from_base_url

MAX_TOKEN_LENGTH = 20000


@dataclass(frozen=True)
class Grant:
    """What an authenticated request may use: an access token and the backend it is valid for."""

    access_token: str
    upstream: Upstream


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
