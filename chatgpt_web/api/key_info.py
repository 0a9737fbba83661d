"""GET /v1/key: the caller's own key, as the service sees it (never the key or its hash).

Scopes, rate limit, concurrency cap, and the day's and month's usage and remaining quota, so a
caller can see a limit coming instead of meeting it.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from ..access import client_key
from ..config import Rate
from ..errors import NotFound
from ..services import current
from .error_boundary import install_error_handlers
from .openai_compat import error_body

blueprint = Blueprint("key_info", __name__, url_prefix="/v1")
install_error_handlers(blueprint, error_body)
WINDOWS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def _rate(value: Rate | None) -> str | None:
    return f"{value.requests}/{WINDOWS.get(value.window, value.window)}" if value else None


@blueprint.get("/key")
def own_key():
    services = current()
    client = client_key()
    if client is None:
        raise NotFound("client keys are off on this service: there is no key to describe",
                       "key_not_found")
    policy = client.policy
    ledger = services.ledger
    body = {"object": "client_key", "id": client.id, "label": client.label,
            "scoped": policy is not None}
    if policy is not None:
        scopes = policy.scopes()
        for name in ("expires_at", "disabled", "models", "backends", "ips", "concurrency",
                     "quota"):
            body[name] = scopes.get(name)
        body["in_flight"] = ledger.in_flight(client.id)
    body["rate_limit"] = _rate(policy.rate if policy and policy.rate
                               else services.config.rate_limit)
    body["usage"] = ledger.status(policy, client.id)
    return jsonify(body)
