"""Relay requests from the OpenAI face: reading them, running them, and the chat and model hooks.

`run()` forwards a request along its model's relay targets. `route_chat()` is asked first by
POST /v1/chat/completions (api/openai_compat.py) and hands the request to the relay when the
model's route says so; `listed_models()` and `find_model()` add the relay's models to /v1/models.

Who pays: with client keys on, the server's upstream keys. With RELAY_BYOK on and client keys
off, a bearer that starts with `sk-` is the caller's own upstream key: it goes to the route's
first upstream, untouched, and is never stored or logged (no key health either).

Every relayed request of a scoped key stays inside its `backends` scope (relay targets are
skipped for a key without "relay", web targets for a key without "web"), its prompt is screened
by MODERATION before any upstream sees it, and its answer's `usage` goes to the key's ledger
(backend "relay") and token quotas.
"""
from __future__ import annotations

import json
import logging
import time

from flask import request

from .. import models, stream_pump, usage
from ..access import backend_refused, bearer, client_key, web_knows
from ..errors import ApiError, BadRequest, NotFound, PayloadTooLarge, ServiceUnavailable
from ..ledger import Ledger
from ..observability import ENVIRON_STARTED
from ..relay.forward import RelayRequest
from ..services import Services

log = logging.getLogger(__name__)
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
# The image paths under /v1 (api/images.py): generations JSON, edits multipart or JSON,
# variations multipart.
GENERATIONS, EDITS, VARIATIONS = "/images/generations", "/images/edits", "/images/variations"


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


def form_request(services: Services, path: str, *, what: str,
                 default_model: str | None = None) -> RelayRequest:
    """The RelayRequest of a multipart endpoint (`what` it uploads, for the error): the body is
    passed on as received, so an upstream reads the files exactly as the caller sent them, but
    for the `model` field, which the relay sets to the model a route sends (relay/multipart.py),
    adding it when the caller left it to the default."""
    body = read_body(services)
    content_type = request.headers.get("Content-Type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest(f"send {what} as multipart/form-data", "invalid_content_type")
    sent_model = request.form.get("model")  # parsed from the cached body
    model = sent_model or default_model
    if not model or len(model) > 200:
        raise BadRequest("'model' is required (a model name)", "missing_field", param="model")
    return RelayRequest(path, body, content_type, model, request.form.get("stream") == "true",
                        None, False, own_key(services), form_model=sent_model)


def prompt_texts(path: str, body: dict | None) -> list[str]:
    """The caller's texts in a relay request, for moderation: chat message contents (text
    parts), a completion's prompt, embedding inputs, an image prompt (a multipart edit's
    fields come as a dict too), the text to speak."""
    if not isinstance(body, dict):
        return []
    if path == "/chat/completions":
        messages = body.get("messages")
        found = []
        for message in messages if isinstance(messages, list) else ():
            content = message.get("content") if isinstance(message, dict) else None
            found += _texts(content, parts=True)
        return found
    field = {"/completions": "prompt", "/embeddings": "input", "/images/generations": "prompt",
             "/images/edits": "prompt", "/audio/speech": "input"}.get(path)
    return _texts(body.get(field), parts=False) if field else []


def _texts(value, *, parts: bool) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return []
    if parts:  # content parts: {"type": "text", "text": ...}
        return [part["text"] for part in value
                if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return [item for item in value if isinstance(item, str)]  # token arrays carry no text


class _Tally:
    """One relayed answer's entry in its key's ledger (counts only, no text): with a token
    quota, its prompt's tokens (counted here) and a completion reserve are held before it starts
    (ledger.hold_tokens); once complete, the upstream's `usage` replaces the hold; an answer that
    never completes gives the hold back."""

    def __init__(self, ledger: Ledger, key_id: str, relay_request: RelayRequest):
        self.ledger, self.key_id, self.model = ledger, key_id, relay_request.model
        self.hold: str | None = None
        self.settled = False

    def take_hold(self, policy, texts: list[str]) -> None:
        """:raise RateLimited: quota_exhausted, the prompt does not fit the token quota."""
        if policy is not None and any(kind == "tokens" for kind, _ in policy.quota):
            prompt = usage.count_text("\n".join(texts), self.model) if texts else 0
            self.hold = self.ledger.hold_tokens(self.key_id, policy, prompt)

    def record(self, answer_usage: dict | None) -> None:
        self.settled = True
        answer_usage = answer_usage or {}
        prompt = _count(answer_usage, "prompt_tokens", "input_tokens")
        completion = _count(answer_usage, "completion_tokens", "output_tokens")
        try:
            self.ledger.record(self.key_id, self.model, "relay", prompt, completion,
                               hold=self.hold)
        except ApiError as error:  # the answer is already given: a ledger outage must not fail it
            log.warning("usage of key %s not recorded (%s)", self.key_id, error.code)

    def give_back(self) -> None:
        if self.settled or self.hold is None:
            return
        self.settled = True
        try:
            self.ledger.drop_hold(self.key_id, self.hold)
        except ApiError as error:  # the hold lapses by itself (ledger.hold_ttl)
            log.warning("token hold of key %s not given back (%s)", self.key_id, error.code)


def _count(usage: dict, *names: str) -> int:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


def run(services: Services, relay_request: RelayRequest):
    """Forward `relay_request` along its model's relay targets.

    :raise ApiError: backend_not_allowed, content_blocked (MODERATION=block), or no target
        served."""
    relay = relay_of(services)
    key = client_key()
    if key is not None and key.policy is not None and not key.policy.allows_backend("relay"):
        raise backend_refused({"relay"})
    fields = relay_request.json
    if fields is None and request.mimetype == "multipart/form-data":
        fields = request.form.to_dict()  # a multipart request's text fields
    texts = prompt_texts(relay_request.path, fields)
    moderator = services.moderator
    if moderator is not None and relay_request.path != "/moderations":
        moderator.check(texts)
    relay_request.started = request.environ.get(ENVIRON_STARTED, time.monotonic())
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
    if key is None:
        return _pumpable(relay.relay.forward(relay_request, attempts, ordered))
    tally = _Tally(services.ledger, key.id, relay_request)
    tally.take_hold(key.policy, texts)
    relay_request.on_complete, relay_request.on_broken = tally.record, tally.give_back
    try:
        response = relay.relay.forward(relay_request, attempts, ordered)
    except BaseException:
        tally.give_back()
        raise
    response.call_on_close(tally.give_back)  # a stream that broke or lost its caller
    return _pumpable(response)


def _pumpable(response):
    """`response`; an event stream's body waits only through its Exchange (wire.py, with
    curl_transfer.wait_multi) and the ledger's short store calls, so with STREAM_PUMP on the
    worker may send it from its stream pump (docs/stream-pump.md)."""
    if response.mimetype == "text/event-stream":
        request.environ[stream_pump.PUMPABLE] = True
    return response


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
    knows = web_knows(model, services.config.default_model)
    targets = _targets_of_key(relay.router.targets(model, web_knows=knows))
    if targets is None:
        return None
    ordered = relay.router.ordered(targets)
    web_ok = any(t.is_web for t in ordered) and knows and _web_can_serve(services, body)
    if ordered[0].is_web and web_ok:
        return None
    return _run_or_hand_back(services, json_request(services, "/chat/completions", decoded=body),
                             web_ok)


def route_images(services: Services, path: str = GENERATIONS):
    """The relay's answer to POST /v1{path} (/images/generations, /images/edits or
    /images/variations), or None to leave it to the web accounts (api/images.py), decided as
    `route_chat()` decides: a model the relay does not route stays on the web; a routed one goes
    to the relay unless a web target comes first and a web account can serve now, and back to
    the web when every relay target failed. Targets outside the client key's `backends` scope are
    skipped, as for chats. Generations are JSON, and so is an edit sent as JSON
    (`Content-Type: application/json`), each forwarded as JSON; other edits and variations are
    multipart, passed on as received but for the `model` field (`form_request()`)."""
    relay = services.relay
    if relay is None:
        return None
    body = None
    if path == GENERATIONS or (path == EDITS and request.is_json):
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            return None
        model = body.get("model")
    else:
        if request.mimetype != "multipart/form-data":
            return None  # the web path says what is wrong with it
        request.get_data(cache=True, parse_form_data=False)  # kept whole, to be passed on
        model = request.form.get("model")
    model = model or models.DEFAULT_IMAGE_MODEL
    if not isinstance(model, str):
        return None
    targets = _targets_of_key(relay.router.targets(model,
                                                   web_knows=model in models.IMAGE_MODELS))
    if targets is None:
        return None
    ordered = relay.router.ordered(targets)
    web_ok = any(t.is_web for t in ordered) and _web_account_ready(services)
    if ordered[0].is_web and web_ok:
        return None
    if body is not None:
        relay_request = json_request(services, path, default_model=models.DEFAULT_IMAGE_MODEL,
                                     decoded=body)
    else:
        relay_request = form_request(services, path, what="the image",
                                     default_model=models.DEFAULT_IMAGE_MODEL)
    return _run_or_hand_back(services, relay_request, web_ok)


def _targets_of_key(targets):
    """The route's `targets` the request's client key may use (its `backends` scope), or None
    when the web path is to take the request: the relay does not route the model, or only web
    targets are left.

    :raise Forbidden: backend_not_allowed, the key may use none of the targets (or, with none,
        not the web path)."""
    key = client_key()
    policy = key.policy if key is not None else None
    if targets is not None and policy is not None:
        allowed = tuple(t for t in targets
                        if policy.allows_backend("web" if t.is_web else "relay"))
        if not allowed:
            raise backend_refused({"web" if t.is_web else "relay" for t in targets})
        targets = allowed
    if targets is None or all(t.is_web for t in targets):
        if policy is not None and not policy.allows_backend("web"):
            raise backend_refused({"web"})
        return None
    return targets


def _run_or_hand_back(services: Services, relay_request, web_ok: bool):
    """The relay's answer, or None when every relay target failed and the web path can take the
    request after all (`web_ok`); a prompt moderation blocked stays refused on both."""
    try:
        return run(services, relay_request)
    except ApiError as error:
        if web_ok and error.code != "content_blocked":
            return None
        raise


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
