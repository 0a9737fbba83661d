"""Is the caller's access token alive? For GET /v1/models, the "test connection" of chat UIs.

Listing models needs no upstream call, so without a check a dead or mistyped token would pass
/v1/models and fail only at the first chat. Without API keys the bearer is therefore checked: an
expired JWT locally, anything else with the backend's GET /me (upstream/auth.py), whose verdict
is kept CHECK_SECONDS under a hash of the token (never the token itself). When the backend cannot
tell (unreachable, a 5xx), the caller is let through and nothing is cached.
"""
from __future__ import annotations

import hashlib

from ..access import bearer
from ..errors import Unauthorized
from ..services import Services
from ..upstream.auth import check_access_token

CHECK_PREFIX = "bearer:v1:checked:"
CHECK_SECONDS = 300


def verify_bearer(services: Services) -> None:
    """Refuse a bearer the backend refuses (cached). :raise Unauthorized: invalid_token."""
    token = bearer()
    if services.keys.enabled or token is None:
        return  # a service key was checked by access.py; no token: the pool serves the caller
    key = CHECK_PREFIX + hashlib.sha256(b"bearer-check\0" + token.encode()).hexdigest()
    verdict = services.store.get(key)
    if verdict is None:
        verdict = check_access_token(services.config, token)
        if verdict is None:
            return
        services.store.set(key, verdict, expire=CHECK_SECONDS)
    if verdict is False:
        raise Unauthorized("the access token was refused by the upstream: get a new one",
                           "invalid_token")
