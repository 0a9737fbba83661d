"""Who is asking: the account behind a request's bearer token, for every backend view."""
from __future__ import annotations

from flask import abort, current_app, request

from . import tokens
from .failures import FAILURES

_ACCEPTED = tokens.AcceptedTokens()


def account() -> str:
    """The user id of the bearer token, or abort 401 as the real backend does."""
    emulator = current_app.extensions["emulator"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise tokens.TokenRejected("invalid_token", "no bearer token")
        claims = _ACCEPTED.verify(emulator.secret, token.strip())
    except tokens.TokenRejected as rejected:
        abort(FAILURES[rejected.code](emulator.switches))
    return tokens.user_id(claims)
