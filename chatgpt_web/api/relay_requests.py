"""Relay requests from the OpenAI face: reading them, running them, and the chat and model hooks.

`run()` forwards a request along its model's relay targets. `route_chat()` is asked first by
POST /v1/chat/completions (api/openai_compat.py) and hands the request to the relay when the
model's route says so; `listed_models()` and `find_model()` add the relay's models to /v1/models.

Who pays: with client keys on, the server's upstream keys. With RELAY_BYOK on and client keys
off, a bearer that starts with `sk-` is the caller's own upstream key: it goes to the route's
first upstream, untouched, and is never stored or logged (no key health either).
"""
from __future__ import annotations

import json

from flask import request

from .. import models
from ..access import bearer
from ..errors import ApiError, BadRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from ..relay.forward import RelayRequest
from ..services import Services

DEFAULT_MODERATION_MODEL = "omni-moderation-latest"


def relay_of(services: Services):
    relay = services.relay
    if relay is None:
        raise ServiceUnavailable("no relay upstreams are configured (UPSTREAMS_FILE)",
                                 "relay_disabled")
    relay.ensure_discovery()
    return relay


def own_key(services: Services) -> str | None:
    """The caller's own upstream key under RELAY_BYOK, else None."""
    if not services.config.relay_byok or services.keys.enabled:
        return None
    token = bearer()
    return token if token and token.startswith("sk-") and len(token) <= 512 else None


def read_body(services: Services) -> bytes:
    limit = services.config.max_relay_body
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes",
                              "request_too_large")
    request.max_content_length = limit + 1  # one byte more: see api/intake.py
    return request.get_data(cache=True)


def json_request(services: Services, path: str, *, binary: bool = False,
                  default_model: str | None = None, decoded=None) -> RelayRequest:
    """The RelayRequest of a JSON endpoint (`decoded`: the body, when already parsed)."""
    body = read_body(services)
    if decoded is None:
        try:
            decoded = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            decoded = None
    if not isinstance(decoded, dict):
        raise BadRequest("the request body must be a JSON object", "invalid_json")
    model = decoded.get("model", default_model)
    if not isinstance(model, str) or not model or len(model) > 200:
        raise BadRequest("'model' is required (a model name)", "missing_field", param="model")
    stream = decoded.get("stream") is True
    return RelayRequest(path, body, "application/json", model, stream, decoded, binary,
                        own_key(services))


def run(services: Services, relay_request: RelayRequest, *, web_fallback: bool = False):
    """Forward `relay_request` along its model's relay targets; None when the web pool should
    serve it instead (only with `web_fallback`, for chat). :raise ApiError: no target served."""
    relay = relay_of(services)
    targets = relay.router.targets(relay_request.model)
    if targets is None or not any(not t.is_web for t in targets):
        raise NotFound(f"The model `{relay_request.model}` does not exist or you do not have "
                       "access to it.", "model_not_found", param="model")
    ordered = relay.router.ordered(targets)
    if relay_request.own_key is not None:
        first = next(t for t in ordered if not t.is_web)
        ordered = [first]
    attempts = relay.router.attempts(relay_request.model, ordered)
    if relay_request.own_key is not None:
        attempts = _first_key_only(attempts)
    return relay.relay.forward(relay_request, attempts, ordered)


def _first_key_only(attempts):
    for attempt in attempts:
        yield attempt
        return


def _web_can_serve(services: Services, body: dict) -> bool:
    """Whether the web path could take this chat request now (same checks it makes)."""
    if body.get("tools") or body.get("functions") or body.get("n") not in (None, 1):
        return False
    return _web_account_ready(services)


def _web_account_ready(services: Services) -> bool:
    """Whether a web account could take a request now: the pool (with client keys on), else a
    bearer that is a ChatGPT access token rather than an `sk-` key."""
    if services.keys.enabled:
        pool = services.pool
        if pool is None:
            return False
        try:
            pool.choose()
        except ApiError:
            return False
        return True
    token = bearer()
    return bool(token) and not token.startswith("sk-")


def route_chat(services: Services):
    """The relay's answer to POST /v1/chat/completions, or None to leave it to the web path.

    The web path keeps every model the relay does not route. For a routed model the targets are
    taken in order: a web target that can serve now (pool not resting, request web-compatible)
    hands the request back; relay targets are tried until one serves; when all relay targets
    fail and a web target follows, the web path gets the request after all.
    """
    relay = services.relay
    if relay is None:
        return None
    body = request.get_json(force=True, silent=True)
    model = body.get("model") if isinstance(body, dict) else None
    if not isinstance(model, str) or not model:
        return None
    web_knows = _web_knows(services, model)
    targets = relay.router.targets(model, web_knows=web_knows)
    if targets is None or all(t.is_web for t in targets):
        return None
    ordered = relay.router.ordered(targets)
    web_ok = any(t.is_web for t in ordered) and web_knows and _web_can_serve(services, body)
    if ordered[0].is_web and web_ok:
        return None
    relay_request = json_request(services, "/chat/completions", decoded=body)
    try:
        return run(services, relay_request)
    except ApiError:
        if web_ok:
            return None
        raise


def route_images(services: Services, web_models: tuple[str, ...] = ()):
    """The relay's answer to POST /v1/images/generations, or None to leave it to the web
    accounts (api/images.py), decided as `route_chat()` decides: a model the relay does not
    route stays on the web; a routed one goes to the relay unless a web target comes first and
    a web account can serve now, and back to the web when every relay target failed."""
    relay = services.relay
    if relay is None:
        return None
    body = request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return None
    model = body.get("model") or "dall-e-2"
    if not isinstance(model, str):
        return None
    targets = relay.router.targets(model, web_knows=model in web_models)
    if targets is None or all(t.is_web for t in targets):
        return None
    ordered = relay.router.ordered(targets)
    web_ok = any(t.is_web for t in ordered) and _web_account_ready(services)
    if ordered[0].is_web and web_ok:
        return None
    relay_request = json_request(services, "/images/generations", default_model="dall-e-2",
                                 decoded=body)
    try:
        return run(services, relay_request)
    except ApiError:
        if web_ok:
            return None
        raise


def _web_knows(services: Services, model: str) -> bool:
    try:
        models.resolve(model, extra_slugs=(services.config.default_model,))
    except NotFound:
        return False
    return True


def listed_models(services: Services, already: set[str]) -> list[dict]:
    """The relay's public models not in `already` (the web list), as official model objects.
    Upstream names stay hidden: every entry is owned by `relay`."""
    relay = services.relay
    if relay is None:
        return []
    relay.ensure_discovery()
    return [model_object(name) for name in relay.router.public_models() if name not in already]


def model_object(name: str) -> dict:
    return {"id": name, "object": "model", "created": models.LISTED_CREATED, "owned_by": "relay"}


def find_model(services: Services, name: str) -> dict | None:
    """The model object of a relay-served name (for GET /v1/models/{id}), else None."""
    relay = services.relay
    if relay is None or relay.router.targets(name) is None:
        return None
    return model_object(name)
